"""The local stand-in for AlgoPerf's runner (``runner``), its checkpointing loop for
the tests (``loop``), the embedded workloads and their registry (``workloads``) and the
figures of a run directory (``plots``)."""
