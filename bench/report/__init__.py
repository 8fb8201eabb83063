"""Reports from a results file: Markdown for publishing, self-contained HTML with plots, and a standalone
reproduction script per failing case, all written next to the results."""
