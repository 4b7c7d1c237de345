"""One measurement: launch, benchmark, classify; the soak; the typed trial record. No Optuna."""
