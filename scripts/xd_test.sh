#!/usr/bin/env bash
# Distribution shift and cross-dataset transfer, step 2: evaluate the model xd_train.sh trained on
# the source on one target dataset (CoCoOp's xd_test.sh):
#   bash scripts/xd_test.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]
#   -> $OUTPUT/evaluation/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/<DATASET>/seed<SEED>
# (evaluation_from_<SOURCE> for another SOURCE than imagenet). A model whose weights are tied to its
# training classes is refused, in one line, on other classes; training-free trainers are evaluated directly.
# Env: SOURCE (default imagenet; smoke offline), SHOTS (default 16); env and options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment xd_test "$@"
