"""Reference AutoDist-style implementation whose checkpoints the suite verifies."""
