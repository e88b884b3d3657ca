"""The local stand-in for AlgoPerf's runner (``runner``, also the tests' loop, with
checkpoints and resume), the embedded workloads and their registry (``workloads``) and
the figures of a run directory (``plots``)."""
