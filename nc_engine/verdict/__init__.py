"""From the detectors' per-label statistics to a verdict: the outlier test (outliers), the class-frequency
correction (class_frequency), the report (report), one rebuilt from a stopped run (recover), and the
verdict's text (formatting)."""
