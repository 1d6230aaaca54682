"""One scan from config to report: the plan, the prepared model and data, the run folder and its files,
the events a UI listens to (events), and the running searches saved for resume (inflight)."""
