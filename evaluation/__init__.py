"""The lab: the zoo of backdoored models, the scans of it and the outlier rule chosen on them (README.md)."""
