"""What one fit is fitted on (units), the fits, bootstrap resamples, holdout refits and the worker
pool. Imports `data` and `core`."""
