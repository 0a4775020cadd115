"""Storage: atomic file writes, manifests and publishing artifacts into artifacts/."""
