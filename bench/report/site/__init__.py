"""A static site over many runs (`peft-bench site`): runs, verdicts across them, trends, each run's report."""
