"""Build every Keras export target declared in a BUILD.py below this folder."""

from pathlib import Path

import rules

workspace = rules.Workspace(Path(__file__).resolve().parent)
DOIT_CONFIG = workspace.doit_config()
