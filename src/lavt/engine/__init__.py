"""Training / evaluation engine."""
