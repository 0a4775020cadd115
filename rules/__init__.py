"""rules_keras: Bazel-style build rules for Keras model exports."""

from __future__ import annotations

__version__ = "0.1.0"
