"""Judging results: verdict rules for a case, and comparing runs (compare, gate, thresholds, statistics)."""
