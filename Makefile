# The README's two commands: `make demo` (main job on the embedded model) and `make test`.
PYTHON ?= python3
TORCH_PINS = torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test colcon-build
install:
	$(PYTHON) -m pip install -q $(TORCH_PINS) -e '.[dev]'

demo: install
	$(PYTHON) -m wps_sam_core.cli predict examples/*.png --out out/demo
	@echo "part masks, overlays and JSON in out/demo/"

test: install
	$(PYTHON) -m pytest -q

colcon-build:
	colcon build --base-paths . --build-base /tmp/wps_colcon/build --install-base /tmp/wps_colcon/install
