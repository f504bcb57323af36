"""`python -m wps_sam_core.cli ...` = `wps-sam ...`."""
import sys

from .main import main

sys.exit(main())
