"""One module per export format: export with Keras, then check in the format's own runtime."""
