"""Measures: per-sequence and per-layer metrics, MLM metrics, invariance, statistics, the decision."""
