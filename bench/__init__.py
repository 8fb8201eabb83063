"""peft-bench: compile-aware benchmarking and verification of PEFT adapters on Transformers."""

__version__ = "0.1.0"

# The results schema version. Bump when a field of bench.results.records changes meaning or is removed.
RESULTS_SCHEMA_VERSION = 1

# The verdict rules a run was judged under. Bump when a rule changes what a verdict means, so that a baseline or a
# published file judged under older rules is flagged (gate refuses it, compare and compat say so).
#   1: files without the field (before known-failure fingerprints).
#   2: known failures carry fingerprints; no non-finite reference matches; every hotswap checks swap_in_place.
#   3: the math oracle checks the library's logic in fp32 and generate's steps; the peft path's reference is
#      padded like the subject; serve steps check that adapters can be told apart, the math on several prompts,
#      and decide faster_than from a confidence interval.
VERDICT_RULES_VERSION = 3
