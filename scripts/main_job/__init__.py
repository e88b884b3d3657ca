"""The main job (``python -m scripts.run``), by job: options, the monitor, run folders
and files, summaries, one run, resume."""
