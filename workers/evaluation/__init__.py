"""Measure a model against the original: evaluation inputs, fidelity, latency, and the report."""
