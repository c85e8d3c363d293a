"""Built-in examples that run the toolkit end to end on real data."""
