"""Bag-of-embeddings sentiment classifier with an in-graph TextVectorization vocabulary."""
