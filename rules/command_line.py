"""Target patterns and relative labels on doit's command line, turned into tasks doit can run.

doit selects tasks by exact name, and ours are labels: `doit //m:e` works,
but `//models/...`, `//pkg:all`, `:name` or a mistyped label would get doit's
generic "Invalid parameter". So before doit selects, each such word becomes
a group task of that name depending on the targets it means (Alias), and a
word that names no target is an error with the closest labels.
"""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rules.loading.labels import Label, valid_name
from rules.loading.patterns import PatternError, current_package, expand, is_pattern

# doit's own commands: a word after which the rest is not a task selection,
# unless it is `run`.
DOIT_COMMANDS = frozenset({"auto", "clean", "dumpdb", "forget", "help", "ignore", "info",
                           "list", "reset-dep", "run", "strace", "tabcompletion"})
# Options of `doit run` that take a value: the value is not a task name.
_VALUED = frozenset({"-v", "--verbosity", "-n", "--process", "-P", "--parallel-type",
                     "-f", "--file", "-d", "--dir", "-o", "--output-file", "-r", "--reporter",
                     "--db-file", "--dep-file", "--backend", "--check_file_uptodate",
                     "--codec-cls", "--failure-verbosity"})


@dataclass(frozen=True)
class Alias:
    """A command-line word (`//models/...`, `:serve`) and the targets it names."""

    word: str
    labels: tuple[Label, ...]


def selected_words(argv: Sequence[str]) -> list[str]:
    """The words of `doit [options] [run] WORD ...` that select tasks; none for other commands."""
    words: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _VALUED:
            skip = True
        elif arg.startswith("-"):
            continue
        elif not words and arg in DOIT_COMMANDS:
            if arg != "run":
                return []
            words.append(arg)
        else:
            words.append(arg)
    return [w for w in words if w != "run"]


def aliases(words: Iterable[str], tasks: Collection[str], labels: Iterable[Label],
            root: Path, cwd: Path, takes_rest: Collection[str] = ()) -> list[Alias]:
    """The words that are patterns or relative labels, with their targets.

    Words doit knows (task names) are left to it, and so is a bare word that
    is no target of the current package and close to none (an option's value
    doit parses itself), and every word after a task in `takes_rest` (its
    positional arguments, as `doit explain :e`). PatternError for a
    label-like word that names nothing.
    """
    known = sorted(set(labels))
    package = current_package(root, cwd)
    found: list[Alias] = []
    for word in words:
        if word in takes_rest:
            break
        if word in tasks or "=" in word:
            continue
        if is_pattern(word):
            found.append(Alias(word, tuple(expand([word], known, package))))
            continue
        if not valid_name(word) or package is None:
            continue
        here = Label(package, word)
        if here in known:
            found.append(Alias(word, (here,)))
            continue
        # Stricter than did_you_mean's 0.6: a bare word may be doit's business
        # (an option's value, "2"), so only a near-miss of a target is ours.
        close = difflib.get_close_matches(word, sorted({lbl.name for lbl in known}), n=3,
                                          cutoff=0.75)
        if close:
            matches = [str(lbl) for lbl in known if lbl.name in close][:3]
            raise PatternError(
                f"no target {word!r} in package {'//' + package!r} ({here}), and doit has no "
                f"task of that name. Did you mean " + " or ".join(map(repr, matches)) + "?"
            )
    return found


def selected_labels(words: Sequence[str], found: Iterable[Alias],
                    labels: Iterable[Label]) -> frozenset[str] | None:
    """The targets the command line names (patterns, relative or exact labels), without their
    dependencies; None when it asks for all of them (`export`, or no word at all)."""
    if not words or "export" in words:
        return None
    by_word = {alias.word: alias.labels for alias in found}
    names = {str(label) for label in labels}
    chosen = {str(label) for word in words for label in by_word.get(word, ())}
    return frozenset(chosen | (names & set(words)))
