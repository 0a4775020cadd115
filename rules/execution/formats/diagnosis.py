"""A converter's own diagnosis, caught while it runs, put before the runtime's later complaint.

tf2onnx does not raise on an op it cannot convert: it logs `Unsupported ops:
Counter({'Erfc': 2})` and writes a graph with the op left in. ONNX Runtime
then refuses the file (`INVALID_GRAPH ... No Op registered for Erfc`) and
suggests raising the opset, which cannot help. So the records converters
log while Keras exports are kept, and when a later step fails, the
converter's words lead the error, with a remedy where one is known.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import re
from collections.abc import Iterator

from rules.execution.failures import JobFailure

_UNSUPPORTED = re.compile(r"Unsupported ops: Counter\((\{.*?\})\)")
# Ops a converter lacks, with what to do instead. Keras's exact gelu is
# x * erfc(-x / sqrt 2) / 2 in TensorFlow; its tanh approximation converts.
REMEDIES = {
    "Erfc": "the exact gelu lowers to Erfc: use gelu with approximate=True "
            "(keras.activations.gelu(x, approximate=True)), or another format",
    "Erf": "the exact gelu lowers to Erf: use gelu with approximate=True, or another format",
}
_GENERIC = ("a converter without a rule for an op does not get one from a higher opset: "
            "replace the op in the model, or export another format")


class ConverterLog(logging.Handler):
    """Keeps what converters log at ERROR while Keras exports."""

    def __init__(self, passes_on: bool) -> None:
        super().__init__(logging.ERROR)
        self.said: list[str] = []
        # With no handler of its own anywhere, logging would print the
        # record through logging.lastResort; ours being there must not
        # take it out of the target's log.
        self._passes_on = passes_on

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.said.append(record.getMessage())
        if self._passes_on and logging.lastResort is not None:
            logging.lastResort.handle(record)

    def diagnosis(self) -> tuple[str, list[str]]:
        """The converter's own headline, and the ops it could not convert (if it said)."""
        for message in self.said:
            found = _UNSUPPORTED.search(message)
            if found:
                try:
                    ops = sorted(ast.literal_eval(found.group(1)))
                except (ValueError, SyntaxError):
                    ops = []
                return found.group(0), [str(op) for op in ops]
        return (self.said[0].strip().splitlines()[0] if self.said else ""), []


@contextlib.contextmanager
def watching() -> Iterator[ConverterLog]:
    """Collect the ERROR records logged (by any converter) inside the block."""
    root = logging.getLogger()
    handler = ConverterLog(passes_on=not root.handlers)
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def converter_first(failure: JobFailure, converter: ConverterLog, fmt: str) -> JobFailure:
    """`failure` (the runtime's) led by the converter's diagnosis, when the converter gave one."""
    headline, ops = converter.diagnosis()
    if not headline:
        return failure
    remedies = [REMEDIES[op] for op in ops if op in REMEDIES] or ([_GENERIC] if ops else [])
    remedy = f" ({'; '.join(remedies)})" if remedies else ""
    return JobFailure(
        "ConversionError",
        f"the {fmt} converter reported: {headline}{remedy}; then: {failure.message}",
        failure.details,
    )
