"""peft-bench: compile-aware benchmarking and verification of PEFT adapters on Transformers."""

__version__ = "0.1.0"

# The results schema version. Bump when a field of bench.results.records changes meaning or is removed.
RESULTS_SCHEMA_VERSION = 1
