#!/usr/bin/env bash
# Convert Pascal-Part label PNGs to COCO, then train + evaluate like PartImageNet, on 4 GPUs.
#   training/train_pascal_part.sh /data/VOC2010/JPEGImages /data/pascal_part/labels_train /data/pascal_part/labels_val \
#       /data/pascal_part/classes.txt /models/sam_vit_b_01ec64.pth runs/pp_vit_b
set -euo pipefail
images=${1:?JPEG folder}; train_labels=${2:?train label PNGs}; val_labels=${3:?val label PNGs}
classes=${4:?class list}; sam=${5:?SAM checkpoint}; out=${6:?output folder}; shift 6
data="$out/coco"
wps-sam convert-pascal-part --images "$images" --labels "$train_labels" --classes "$classes" --out "$data" --split train
wps-sam convert-pascal-part --images "$images" --labels "$val_labels" --classes "$classes" --out "$data" --split val
CONFIG_NAME=pascal_part_vit_b "$(dirname "$0")/train_partimagenet.sh" "$data" "$sam" "$out" "$@"
