"""registration stage."""
