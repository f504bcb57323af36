"""The `wps-sam` command line: `main.py` builds the parser from one module per subcommand group
(predict, world, train, cache, data, eval, export; `bag` comes from wps_sam_ros through the
`wps_sam.commands` entry points); `common.py` holds the model-selection flags they share."""
from .main import build_parser, main

__all__ = ["build_parser", "main"]
