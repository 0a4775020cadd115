"""Neutral modules beneath every layer: values, errors, hashing and the filesystem toolkit.

Nothing here imports another part of rules_keras: loading, analysis,
execution, storage and cache all import downwards into core.
"""
