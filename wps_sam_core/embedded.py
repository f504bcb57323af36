"""The embedded default model: a tiny SAM + a box-trained prompter shipped in `assets/`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import WpsSamError
from .segmenter import DEFAULT_DEVICE, DEFAULT_PRECISION, PartSegmenter, SegmenterSettings

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
EMBEDDED_SAM_TYPE = "tiny"
EMBEDDED_SAM_WEIGHTS = ASSETS_DIR / "tiny_sam.safetensors"
EMBEDDED_PROMPTER = ASSETS_DIR / "prompter_box.safetensors"
EMBEDDED_METADATA = ASSETS_DIR / "model_card.json"
EMBEDDED_DESCRIPTION = "embedded default model (tiny SAM + box-trained prompter, procedural part world)"
DEMO_MODEL_CAVEAT = (
    "demo model: trained on a procedural shapes world, it does not recognise real objects; pass a prompter "
    "trained on your parts (prompter_checkpoint / --prompter) and its official SAM checkpoint (sam_checkpoint / "
    "--sam-checkpoint)")


def embedded_available() -> bool:
    return EMBEDDED_SAM_WEIGHTS.is_file() and EMBEDDED_PROMPTER.is_file()


def embedded_metadata() -> dict[str, Any]:
    return json.loads(EMBEDDED_METADATA.read_text()) if EMBEDDED_METADATA.is_file() else {}


def embedded_object_classes() -> tuple[str, ...] | None:
    """The shipped prompter's class-to-object table, from the model card's prompter.part_objects (the prompter
    file predates the table; its class names spell the same: test_embedded_model); None without a card."""
    from .postprocess.objects import object_table

    prompter = embedded_metadata().get("prompter", {})
    if "part_objects" not in prompter:
        return None
    return object_table(prompter["class_names"], prompter["part_objects"], str(EMBEDDED_METADATA))


def load_embedded_segmenter(device: str = DEFAULT_DEVICE, precision: str = DEFAULT_PRECISION,
                            settings: SegmenterSettings | None = None) -> PartSegmenter:
    """PartSegmenter over the shipped weights (no network, no extra files); it carries DEMO_MODEL_CAVEAT."""
    if not embedded_available():
        raise WpsSamError(
            f"no embedded default model in {ASSETS_DIR}; pass --prompter (and --sam-checkpoint) "
            f"or reinstall the package"
        )
    return PartSegmenter.from_checkpoints(
        EMBEDDED_PROMPTER, EMBEDDED_SAM_TYPE, EMBEDDED_SAM_WEIGHTS, device, precision, settings,
        description=EMBEDDED_DESCRIPTION, caveat=DEMO_MODEL_CAVEAT,
        object_classes=embedded_object_classes(),  # the card's table; None = the checkpoint's
    )
