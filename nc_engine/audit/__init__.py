"""Scanning a zoo of models listed in a spec file, one run folder each, with one summary; locally or on Ray."""
