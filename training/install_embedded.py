#!/usr/bin/env python3
"""Install a trained tiny SAM + box prompter as the package's embedded default (wps_sam_core/assets/).

    python3 training/install_embedded.py --run runs/embedded [--assets wps_sam_core/assets]

Both files are stored in float16 (half the bytes; the loaders copy them into float32 modules, and the
metrics in the model card are measured on these very files). Writes model_card.json: how the model
was trained (commands, seeds, dataset sizes, steps, times), sizes and sha256 of both files. Its
`metrics` are filled by training/results_table.py --model-card.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from wps_sam_core.checkpoint import load_prompter_checkpoint, save_prompter_checkpoint
from wps_sam_core.distill.sam_pretrain import save_sam_weights_state
from wps_sam_core.embedded import EMBEDDED_METADATA, EMBEDDED_PROMPTER, EMBEDDED_SAM_TYPE, EMBEDDED_SAM_WEIGHTS
from wps_sam_core.io_utils import atomic_write_text, sha256_file
from wps_sam_core.modeling.sam import get_sam_config, read_state_dict

STORAGE_DTYPE = torch.float16
PRETRAIN_STAGES = ("tiny_sam", "tiny_sam_stage2", "tiny_sam_stage3")  # folders of training/reproduce_embedded.sh, in order


def half(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.to(STORAGE_DTYPE) if v.is_floating_point() else v for k, v in state.items()}


def world_info(run: Path, split: str) -> dict:
    path = run / "world" / "annotations" / split / f"{split}.json"
    data = json.loads(path.read_text())
    return {"split": split, "seed": data["info"]["seed"], "images": len(data["images"]),
            "part_instances": len(data["annotations"]), "size": data["info"]["size"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="the folder training/reproduce_embedded.sh wrote")
    p.add_argument("--prompter", default="box/best.safetensors", help="prompter checkpoint inside --run")
    p.add_argument("--assets", help="target folder (default: the package's assets/)")
    args = p.parse_args(argv)
    run = Path(args.run)
    assets = Path(args.assets) if args.assets else EMBEDDED_SAM_WEIGHTS.parent
    sam_out, prompter_out, card_out = (assets / EMBEDDED_SAM_WEIGHTS.name, assets / EMBEDDED_PROMPTER.name,
                                       assets / EMBEDDED_METADATA.name)

    stages = [json.loads((run / name / "summary.json").read_text()) for name in PRETRAIN_STAGES]
    save_sam_weights_state(half(read_state_dict(run / PRETRAIN_STAGES[-1] / "sam.safetensors")), sam_out,
                           {"sam_type": EMBEDDED_SAM_TYPE, "storage": "float16"})
    ckpt = load_prompter_checkpoint(run / args.prompter)
    ckpt.state_dict = half(ckpt.state_dict)
    ckpt.sam_checkpoint_sha256 = sha256_file(sam_out)  # the prompter belongs to exactly this SAM file
    save_prompter_checkpoint(prompter_out, ckpt)
    train_summary = json.loads((run / "box" / "summary.json").read_text())

    sizes = {sam_out.name: sam_out.stat().st_size, prompter_out.name: prompter_out.stat().st_size}
    old = json.loads(card_out.read_text()) if card_out.is_file() else {}
    card = {
        "name": "wps-sam embedded default (tiny SAM + box-trained prompter, procedural part world)",
        "reproduce": "training/reproduce_embedded.sh runs/embedded  (CPU; then training/reproduce_results.sh "
                     "runs/embedded for the metrics)",
        "sam": {"type": EMBEDDED_SAM_TYPE, "config": get_sam_config(EMBEDDED_SAM_TYPE).to_dict(),
                "file": sam_out.name, "sha256": sha256_file(sam_out), "storage": "float16",
                "pretraining": {"data": "generic-shapes world (wps_sam_core/data/shapes_world.py), rendered on the fly; "
                                        "class-agnostic, never the part world's classes",
                                "stages": [{"folder": name, "config": st["config"], "steps": st["steps"],
                                            "images_seen": st["steps"] * st["config"]["images_per_step"],
                                            "wall_seconds": st["seconds"], "cpu_seconds": st.get("cpu_seconds"),
                                            "final_log": st["final"]} for name, st in zip(PRETRAIN_STAGES, stages)],
                                "wall_seconds": round(sum(st["seconds"] for st in stages), 1)}},
        "prompter": {"file": prompter_out.name, "sha256": sha256_file(prompter_out), "storage": "float16",
                     "config": ckpt.config.to_dict(), "class_names": ckpt.class_names,
                     "part_objects": dict(zip(ckpt.class_names, ckpt.object_classes)), "supervision": "box",
                     "checkpoint": args.prompter, "step": ckpt.info.get("step"),
                     "val_mIoU": ckpt.info.get("val_mIoU"),
                     "train_config": ckpt.info.get("train_config"), "wall_seconds": train_summary.get("seconds"),
                     "data": {"train": world_info(run, "train"), "val": world_info(run, "val")}},
        "sizes_bytes": {**sizes, "total": sum(sizes.values())},
        # metrics of the previous model would be wrong for this one: training/results_table.py fills them
        "metrics": old.get("metrics", {}) if old.get("prompter", {}).get("sha256") == sha256_file(prompter_out) else {},
    }
    atomic_write_text(card_out, json.dumps(card, indent=2) + "\n")
    print(json.dumps({"installed": [str(sam_out), str(prompter_out), str(card_out)], "sizes_bytes": card["sizes_bytes"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
