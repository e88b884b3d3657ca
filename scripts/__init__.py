"""Demo tooling: embedded workloads, a local AlgoPerf-style runner, CLI and plots."""
