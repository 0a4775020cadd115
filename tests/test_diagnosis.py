"""A converter's logged diagnosis leads a later failure, with the remedy for a known op."""

from __future__ import annotations

import logging

from rules.execution.failures import JobFailure
from rules.execution.formats.diagnosis import converter_first, watching

RUNTIME = JobFailure("RuntimeError", "the onnx artifact could not be opened: INVALID_GRAPH")


def test_unsupported_ops_lead_with_the_gelu_remedy() -> None:
    with watching() as converter:
        logging.getLogger("tf2onnx.tfonnx").error("Tensorflow op [x/Erfc: Erfc] is not supported")
        logging.getLogger("tf2onnx.tfonnx").error("Unsupported ops: Counter({'Erfc': 2})")
    failure = converter_first(RUNTIME, converter, "onnx")
    assert failure.kind == "ConversionError"
    assert failure.message.startswith(
        "the onnx converter reported: Unsupported ops: Counter({'Erfc': 2}) "
        "(the exact gelu lowers to Erfc: use gelu with approximate=True")
    assert failure.message.endswith("; then: the onnx artifact could not be opened: INVALID_GRAPH")


def test_an_unknown_op_gets_the_generic_remedy_and_silence_changes_nothing() -> None:
    with watching() as converter:
        logging.getLogger("tf2onnx.tfonnx").error("Unsupported ops: Counter({'Foo': 1})")
    assert "does not get one from a higher opset" in converter_first(RUNTIME, converter,
                                                                     "onnx").message
    with watching() as quiet:
        logging.getLogger("tf2onnx").warning("only a warning")
    assert converter_first(RUNTIME, quiet, "onnx") is RUNTIME


def test_watching_leaves_the_root_logger_as_it_was() -> None:
    before = list(logging.getLogger().handlers)
    with watching():
        pass
    assert logging.getLogger().handlers == before
