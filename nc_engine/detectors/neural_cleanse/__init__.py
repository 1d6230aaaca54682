"""Neural Cleanse (Wang et al., IEEE S&P 2019): per label, the smallest trigger (mask and pattern) that
turns clean images into that label, searched for many labels at once (search), with the stamping (trigger),
the attack-rate check (asr), the cost schedule (schedule), the cheap first pass over many labels
(screening) and the batch sizing (groups). The outlier test on the triggers' sizes is in nc_engine.verdict."""
