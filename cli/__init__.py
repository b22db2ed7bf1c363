"""backflush: the command line."""
