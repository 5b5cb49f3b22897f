#!/usr/bin/env bash
# Offline pipeline check: the built-in smoke data with the tiny random CLIP. Accuracies mean nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATA="${DATA:-$PWD/data}"
python train.py --root "$DATA" --seed 1 --trainer ZeroshotCLIP \
  --dataset-config-file configs/datasets/smoke.yaml --config-file configs/trainers/ZeroshotCLIP/tiny.yaml \
  --output-dir output/smoke/ZeroshotCLIP/tiny/seed1
python -c "import json,sys; r=json.load(open('output/smoke/ZeroshotCLIP/tiny/seed1/results.json')); print('ZeroshotCLIP on smoke/tiny: accuracy %.2f%% (pipeline check)' % r['accuracy'])"
