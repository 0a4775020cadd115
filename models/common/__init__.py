"""Code shared by example models; only models.tagger imports it, so edits rebuild just tagger."""
