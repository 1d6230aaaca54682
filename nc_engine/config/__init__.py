"""The scan's settings: the TOML config read, checked and typed (settings), and the fingerprints that tie
a run folder to the model, data and config it was made from (fingerprint)."""
