"""The ways a scan can see a backdoor. Each detector gives every label its own statistic and evidence;
the verdict (nc_engine.verdict) combines them.

neural_cleanse: per label, the smallest mask and pattern that flip clean images to it.
"""
