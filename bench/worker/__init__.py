"""The worker: runs one case in its own process and writes its CaseResult."""
