"""Command-line tools (this folder) and their libraries: `local/` (the local runner, the
embedded workloads, plots) and `experiments/` (the evidence grid and other experiments)."""
