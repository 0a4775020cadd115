"""Analysis: resolve targets into actions and compute their action keys, without TensorFlow."""
