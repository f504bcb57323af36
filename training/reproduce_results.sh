#!/usr/bin/env bash
# The mini-reproduction table (docs/results.md) and the model card's metrics, after reproduce_embedded.sh:
#
#   training/reproduce_results.sh [OUT=runs/embedded]
#
# Trains the point-supervised prompter (training/configs/world_point.yaml, one interior click per
# part) on the same cache, then evaluates on the held-out test split (seed 3): SAM + GT boxes, SAM +
# GT points, WPS-SAM(box) = the installed embedded prompter, WPS-SAM(point); both metric protocols; then
# training/dedup_table.py adds the part-instance metrics with and without duplicate suppression, and
# training/tracking_table.py the tracking metrics on world clips.
set -euo pipefail
out=${1:-runs/embedded}
here=$(cd "$(dirname "$0")" && pwd)
assets="$here/../wps_sam_core/assets"
export OMP_NUM_THREADS=${THREADS:-1}
# trained on the same fp32 run SAM and cache as the box prompter; every row is evaluated on the SHIPPED (float16) SAM
wps-sam train --config "$here/configs/world_point.yaml" --data "$out/world" --out-dir "$out/point" \
  --set model.sam_checkpoint="$out/tiny_sam_stage3/sam.safetensors" --set data.cache_dir="$out/cache_train" \
  --set run.progress=false ${TRAIN_FLAGS:-}  # TRAIN_FLAGS=--resume or --overwrite for a rerun into OUT
python3 "$here/results_table.py" --data "$out/world" --split test \
  --box-prompter "$assets/prompter_box.safetensors" --point-prompter "$out/point/best.safetensors" \
  --sam-checkpoint "$assets/tiny_sam.safetensors" --out "$here/../docs/results.md" \
  --model-card "$assets/model_card.json"
# duplicate suppression: method and dedup_iou chosen on val, with/without on test (its own section of docs/results.md)
python3 "$here/dedup_table.py" --data "$out/world" --out "$here/../docs/results.md"
# parts linked to their object: grouping chosen on val, part-to-object accuracy on test (its own section)
python3 "$here/objects_table.py" --data "$out/world" --out "$here/../docs/results.md"
# tracking: clips of the world (rendered into OUT/world_clips), IDF1/MOTA for GT masks, GT boxes, prompter (own section)
python3 "$here/tracking_table.py" --clips-dir "$out/world_clips" --out "$here/../docs/results.md"
# parts in 3D: the test split rendered with depth + sensor noise (at 1 m and 0.4-3 m), 3D centre errors (own section)
python3 "$here/depth_table.py" --world-dir "$out" --out "$here/../docs/results.md"
# the README's 3D pictures (docs/parts_3d.png, docs/parts_3d_cloud.png) from that split
python3 "$here/parts_3d_picture.py" --world "$out/world_depth" --overlay "$here/../docs/parts_3d.png" \
  --cloud "$here/../docs/parts_3d_cloud.png"
