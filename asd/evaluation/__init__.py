"""From scores to results: metrics as the official evaluators compute them, scoring a detector,
plots, reports across runs and the official submission files."""
