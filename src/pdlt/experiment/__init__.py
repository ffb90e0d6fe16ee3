"""Real networks: batched ensembles, estimators with error bars."""
