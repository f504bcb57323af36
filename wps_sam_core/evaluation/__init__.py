"""Evaluation: the prompter and the SAM + ground-truth-prompt baselines on a part dataset
(`evaluate.py`), semantic metrics in both protocols (`metrics.py`) and JSON / markdown reports (`report.py`)."""
