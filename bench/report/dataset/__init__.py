"""A dataset others can load (`peft-bench publish`): Parquet per run, a dataset card, the results files."""
