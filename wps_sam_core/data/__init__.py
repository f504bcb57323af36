"""Data: COCO-format part datasets (`coco.py`, category ids -> classes in `categories.py`, masks in
`rle.py`), weak labels (boxes and points, `weak_labels.py`), Pascal-Part conversion (`pascal_part.py`) and
the procedural part and shapes worlds (`world.py`, `shapes_world.py`, drawn by `render.py`)."""
