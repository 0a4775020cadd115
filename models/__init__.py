"""Example models built by rules_keras; each subpackage holds one BUILD.py."""
