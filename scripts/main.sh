#!/usr/bin/env bash
# Few-shot training, seeds $SEEDS (1 2 3), CoOp-style folders:
#   bash scripts/main.sh DATASET CFG SHOTS [TRAINER=CLIP_Adapter] [KEY VALUE ...]
#   -> $OUTPUT/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/seed<S>
# Extra KEY VALUE opts override the config and name a variant folder (TRAINER.CLIP_ADAPTER.RATIO 0.6
# -> .../ratio0.6/seed1). CFG and DATASET are names in configs/ (or a plugin's) or YAML paths.
# e.g. bash scripts/main.sh smoke tiny 4 CLIP_Adapter; bash scripts/main.sh caltech101 rn50 16 --jobs 3
# Env, sweep options, --status and exit statuses: scripts/common.sh, or bash scripts/main.sh --help.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment main "$@"
