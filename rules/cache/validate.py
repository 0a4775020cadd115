"""Whether a cache entry answers the question asked: the one check every cache tier applies.

A hit is restored and published under a label, so an entry must prove it is
that label's artifact before anything is downloaded or written (issue 15 §1).
Digests alone cannot: a server that answers every key with another key's
valid entry, or with an empty body, passes every hash check. So an entry is
taken only when

- its record names the action key that was asked for;
- its outputs are exactly the files and folders its record lists (checked
  while decoding, in rules.cache.records);
- it has the shape every artifact of the target has (rules.core.formats.Expected):
  a SavedModel holds a non-empty saved_model.pb, a weights or ONNX file is one file;
- it is not empty.

Every blob is then verified by its sha256 as it is downloaded or restored.

The label is recorded and shown, but a different label is not a refusal: the
label is deliberately outside the action key (rules.core.job NOT_IN_KEY), so
two targets with the same action share one entry, and a renamed target is
restored from the cache (tests/test_e2e_explain.py). A key names everything
that makes the artifact; a label adds nothing a forger could not also write.
"""

from __future__ import annotations

from dataclasses import dataclass

from rules.cache.records import ActionResult
from rules.core.files import InvalidEntry
from rules.core.formats import Expected


@dataclass(frozen=True)
class Question:
    """What a build asks a cache for: the artifact of `label` under action key `key`."""

    key: str
    label: str
    expected: Expected


class Rejected(Exception):
    """A cache entry does not answer the question; the message says why, for a warning."""


def problem(entry: ActionResult, question: Question) -> str | None:
    """Why `entry` is not the answer to `question`, or None when it is."""
    if entry.key != question.key:
        named = f"action {entry.key[:12]}" if entry.key else "no action"
        built = f" (built for {entry.label})" if entry.label else ""
        return f"it names {named}{built}, not {question.key[:12]}"
    return question.expected.problem(entry.kind, {f.path: f.size for f in entry.files})


def accept(data: bytes, question: Question) -> ActionResult:
    """Decode an AC entry and check it answers `question`; raises Rejected otherwise."""
    if not data:
        raise Rejected("it is empty (0 bytes)")
    try:
        entry = ActionResult.from_reapi(data)
    except InvalidEntry as err:
        raise Rejected(str(err)) from None
    why = problem(entry, question)
    if why is not None:
        raise Rejected(why)
    return entry
