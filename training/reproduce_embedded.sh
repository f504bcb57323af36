#!/usr/bin/env bash
# Reproduce the embedded default model (wps_sam_core/assets/) from nothing, on CPU:
#
#   training/reproduce_embedded.sh [OUT=runs/embedded]
#
# 1. pre-train the tiny SAM class-agnostically on the generic-shapes world (rendered on the fly), in three
#    stages: (a) box prompts only from random init (the recipe = PretrainConfig's defaults, spelled out
#    below; from scratch, point prompts kept it on the all-background prior too long), then (b) from
#    (a)'s weights on new scenes (shapes seed 1) with 30 % single-click prompts (SAM's multimask
#    training for clicks), so clicks are inside what the model learnt, then (c) the same once more on
#    new scenes (shapes seed 2): a warm restart of the schedule (GT-box val mIoU 62.3 -> 64.9 after 1,600
#    of its steps); each stage is skipped when its summary.json exists. The SAM used from here on is
#    OUT/tiny_sam_stage3/sam.safetensors;
# 2. render the part world: train (seed 1, 4000 images), val (seed 2, 100), held-out test (seed 3, 100);
#    examples/ = the first 4 test images;
# 3. cache the tiny SAM's embeddings of the train split (+ horizontal flips);
# 4. train the prompter from part BOXES only (training/configs/world_box.yaml);
# 5. install both into wps_sam_core/assets/ (float16) with model_card.json.
# Then training/reproduce_results.sh OUT trains the point-supervised prompter and writes docs/results.md
# and the card's metrics. Seeded; one thread per process (as fast as two on a shared 2-core machine).
# Measured on the shared 2-core CI machine (model_card.json has every stage's seconds): pretraining 48 + 49 + 46
# min, world 2 min, cache 4 min, prompter 49 min: about 3 h 20 min in all, over the 1-hour goal (the SAM stages
# dominate; PRETRAIN_STOP_AFTER / STAGE2_STOP_AFTER / STAGE3_STOP_AFTER shorten them, at a cost in quality).
set -euo pipefail
out=${1:-runs/embedded}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
export OMP_NUM_THREADS=${THREADS:-1}
mkdir -p "$out"
if [ ! -f "$out/tiny_sam/summary.json" ]; then
  python3 "$here/pretrain_tiny_sam.py" --out "$out/tiny_sam" --no-progress --set num_threads="$OMP_NUM_THREADS" \
    --set steps=3000 --set stop_after="${PRETRAIN_STOP_AFTER:-2400}" --set images_per_step=4 --set prompts_per_image=12 \
    --set loss_size=64 --set lr=5e-4 --set encoder_lr_scale=1.0 --set warmup_steps=100 --set point_fraction=0.0 \
    --set focal_alpha=0.25 --set seed=0 --set shapes_seed=0
fi
if [ ! -f "$out/tiny_sam_stage2/summary.json" ]; then
  python3 "$here/pretrain_tiny_sam.py" --out "$out/tiny_sam_stage2" --no-progress --set num_threads="$OMP_NUM_THREADS" \
    --set init_weights="$out/tiny_sam/sam.safetensors" --set steps=2400 --set stop_after="${STAGE2_STOP_AFTER:-2400}" \
    --set images_per_step=4 --set prompts_per_image=12 --set loss_size=64 --set lr=3e-4 --set warmup_steps=50 \
    --set point_fraction=0.3 --set seed=1 --set shapes_seed=1
fi
if [ ! -f "$out/tiny_sam_stage3/summary.json" ]; then
  python3 "$here/pretrain_tiny_sam.py" --out "$out/tiny_sam_stage3" --no-progress --set num_threads="$OMP_NUM_THREADS" \
    --set init_weights="$out/tiny_sam_stage2/sam.safetensors" --set steps=2400 --set stop_after="${STAGE3_STOP_AFTER:-2400}" \
    --set images_per_step=4 --set prompts_per_image=12 --set loss_size=64 --set lr=3e-4 --set warmup_steps=50 \
    --set point_fraction=0.3 --set seed=2 --set shapes_seed=2
fi
sam="$out/tiny_sam_stage3/sam.safetensors"
for spec in "train 4000 1" "val 100 2" "test 100 3"; do
  set -- $spec
  [ -f "$out/world/annotations/$1/$1.json" ] || wps-sam world --out "$out/world" --split "$1" --n "$2" --seed "$3"
done
mkdir -p "$repo/examples"
for i in 0 1 2 3; do cp "$out/world/images/test/00000$i.png" "$repo/examples/world_test_00000$i.png"; done
wps-sam cache --data "$out/world" --split train --sam-type tiny --sam-checkpoint "$sam" \
  --out "$out/cache_train" --hflip --device cpu --batch-size 16
wps-sam train --config "$here/configs/world_box.yaml" --data "$out/world" --out-dir "$out/box" \
  --set model.sam_checkpoint="$sam" --set data.cache_dir="$out/cache_train" \
  --set run.progress=false ${TRAIN_FLAGS:-}  # TRAIN_FLAGS=--resume or --overwrite for a rerun into OUT
python3 "$here/install_embedded.py" --run "$out"
