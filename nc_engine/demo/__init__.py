"""The built-in demo (build) and the small training kit it shares with the zoo and the tests (training)."""
