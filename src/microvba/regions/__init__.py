"""regions stage."""
