"""MLP regressor trained and exported on the JAX backend."""
