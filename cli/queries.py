"""Projection, findings and audit commands (registered on the ``backflush`` group)."""
