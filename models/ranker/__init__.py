"""Two-tower ranker over dict inputs, with checked-in weights."""
