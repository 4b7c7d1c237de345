"""The Optuna side: space and ranges, goal, study and sampler, telling results, ranking,
the pre-screen, guided moves, workers."""
