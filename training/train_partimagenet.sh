#!/usr/bin/env bash
# Train + evaluate WPS-SAM on PartImageNet on 4 GPUs of one node.
#   training/train_partimagenet.sh /data/PartImageNet /models/sam_vit_b_01ec64.pth runs/pin_vit_b [--set key=value ...]
# 1. cache: the frozen encoder runs once per image and flip (fp16, ~2 MiB per entry for vit_b);
# 2. train: Lightning Fabric DDP over 4 GPUs, reading the cache; resume with the same command + --resume;
# 3. eval: both metric protocols, with the SAM + GT boxes / points baselines.
set -euo pipefail
data=${1:?dataset root}; sam=${2:?SAM checkpoint}; out=${3:?output folder}; shift 3
config="$(dirname "$0")/configs/${CONFIG_NAME:-partimagenet_vit_b}.yaml"
wps-sam cache --data "$data" --split train --sam-type vit_b --sam-checkpoint "$sam" --out "$out/cache_train" --hflip --skip-bad \
  --accelerator cuda --devices 4   # one encoder per GPU, the same bytes as one process
wps-sam train --config "$config" --data "$data" --out-dir "$out" \
  --set model.sam_checkpoint="$sam" --set data.cache_dir="$out/cache_train" "$@"
wps-sam eval --data "$data" --split val --prompter "$out/best.safetensors" --sam-type vit_b --sam-checkpoint "$sam" \
  --skip-bad --json "$out/eval_val.json"
