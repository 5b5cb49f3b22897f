#!/usr/bin/env bash
# Base-to-novel generalization, step 2: load the model trained on base classes and evaluate it on
# the new classes and on the base classes (so the tables can compute HM):
#   bash scripts/base2new_test.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]
#   -> $OUTPUT/base2new/test_new/<DATASET>/shots_16/<TRAINER>/<CFG>[/<variant>]/seed<SEED>
#      $OUTPUT/base2new/test_base/...   (same levels)
# Training-free trainers are evaluated directly. Env: SHOTS (default 16); env and options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment base2new_test "$@"
