"""Cost estimates before a run: each case's wall time and peak memory, predicted from the model's parameter
count, precision, compile backend, steps and workload, calibrated from this machine's own stored runs.

params.py (parameter counts without building weights) -> features.py (a case as numbers) -> model.py (the
pure prediction and the least-squares fit) -> calibration.py (the file in the cache root) -> text.py (the
lines `list --estimate` and `run` print). The numbers the model starts from are data, in policy.py.
"""
