#!/usr/bin/env bash
# A training-free trainer (zero-shot CLIP), one evaluation: its number depends on neither seed nor shots.
#   bash scripts/zeroshot.sh DATASET CFG [TRAINER=ZeroshotCLIP] [KEY VALUE ...]
#   -> $OUTPUT/<DATASET>/<TRAINER>/<CFG>[/<variant>]/seed1
# TRAINER ZeroshotCLIP2 uses the ImageNet template ensemble. Env and options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment zeroshot "$@"
