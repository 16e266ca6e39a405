"""Simulated data (cohorts with planted effects, known deformations)."""
