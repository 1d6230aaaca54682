"""Speed benchmarks: each script times one thing; what it printed is kept in results/ (README.md)."""
