#!/usr/bin/env bash
# Base-to-novel generalization, step 1: train on the base classes (first half of the labels), 16 shots.
#   bash scripts/base2new_train.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]
#   -> $OUTPUT/base2new/train_base/<DATASET>/shots_16/<TRAINER>/<CFG>[/<variant>]/seed<SEED>   (CoCoOp's layout)
# Then scripts/base2new_test.sh evaluates on the new (and base) classes. Training-free trainers need
# no training step. Env: SHOTS (default 16); env and options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment base2new_train "$@"
