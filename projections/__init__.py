"""backflush: read side (flushing rules on replay, projections, findings)."""
