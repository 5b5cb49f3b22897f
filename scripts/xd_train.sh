#!/usr/bin/env bash
# Distribution shift and cross-dataset transfer, step 1: train on the source dataset (ImageNet),
# 16 shots, all classes (CoCoOp's xd_train.sh):
#   bash scripts/xd_train.sh SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]
#   -> $OUTPUT/<SOURCE>/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/seed<SEED>   (main.sh's folder: reused)
# Env: SOURCE (default imagenet; smoke offline), SHOTS (default 16); env and options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment xd_train "$@"
