"""The Keras backends rules_keras exports from: what each needs installed, and how to get it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Backend = Literal["tensorflow", "jax"]


@dataclass(frozen=True)
class BackendInfo:
    """One backend. `modules`: what its exports import (JAX exports go through jax2tf into TF)."""

    name: Backend
    modules: tuple[str, ...]
    install: str


BACKENDS: dict[str, BackendInfo] = {
    b.name: b
    for b in (
        BackendInfo("tensorflow", ("keras", "tensorflow"),
                    "pip install 'rules-keras[tensorflow]'"),
        BackendInfo("jax", ("keras", "jax", "jaxlib", "tensorflow"),
                    "pip install 'rules-keras[jax]'"),
    )
}
