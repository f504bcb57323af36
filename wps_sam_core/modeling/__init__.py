"""The networks: the SAM registry over the official `segment_anything` modules with strict, safe
loading (`sam.py`, MobileSAM's encoder in `sam_vit_t.py`), the DETR-style prompter (`prompter.py`,
`transformer.py`) and WPSSAM, the prompter on a frozen SAM (`wpssam.py`). nn.Modules only, no file I/O
beyond reading SAM weights."""
