"""Multi-label tagger: a subclassed keras.Model built on models.common.layers."""
