"""Experiments behind the report: the evidence grid (``design``, ``evidence``,
``evidence_report``), the divergence experiment and the failed-reset probe."""
