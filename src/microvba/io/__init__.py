"""BIDS input, gradient tables and BIDS-derivatives output."""
