"""One audit, end to end: results, per-batch measurement, summaries, and the run that ties them."""
