"""Training: distilling a prompter from weak labels (boxes/points) on a frozen SAM — the training loop
(`trainer.py`), its YAML schema (`config.py`), Hungarian matching and losses (`matcher.py`, `losses.py`),
the training dataset (`dataset.py`), the frozen-encoder embedding cache (`cache.py`) and the class-agnostic
pre-training of the tiny SAM (`sam_pretrain.py`)."""
