"""Predicting memory from ``config.json`` and learning it from launches: model, architecture,
KV cache, estimates, calibration, failure rules, plan."""
