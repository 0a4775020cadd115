"""Failures raised inside a worker, with the user's part of the traceback."""

from __future__ import annotations

import importlib
import traceback
from pathlib import Path

_OUR_DIR = str(Path(__file__).resolve().parent)
_IMPORTLIB_DIR = str(Path(importlib.__file__).resolve().parent)


class JobFailure(Exception):
    """A job failed for a reason we can name; `details` is the user's traceback, if any."""

    def __init__(self, kind: str, message: str, details: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.details = details


def user_traceback(err: BaseException) -> str:
    """The traceback of `err` without the worker's own frames, which only add noise."""
    tb = traceback.TracebackException.from_exception(err)
    frames = [
        f
        for f in tb.stack
        if not f.filename.startswith((_OUR_DIR, _IMPORTLIB_DIR, "<frozen importlib"))
    ]
    tb.stack = traceback.StackSummary.from_list(frames)
    return "".join(tb.format())


def import_ref(ref: str, attr: str) -> object:
    """Resolve 'module:function', turning import problems into a JobFailure."""
    module_name, _, name = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:
        raise JobFailure(
            "ImportError",
            f"{attr} {ref!r} could not be imported: {type(err).__name__}: {err}",
            user_traceback(err),
        ) from err
    try:
        return getattr(module, name)
    except AttributeError:
        raise JobFailure(
            "ImportError", f"{attr} {ref!r}: module {module_name!r} has no attribute {name!r}"
        ) from None
