"""backflush: write side (event models, validation, store, integrity)."""
