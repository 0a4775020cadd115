"""Execution: worker subprocesses that import Keras and run exports and training."""
