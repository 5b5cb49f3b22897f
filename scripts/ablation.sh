#!/usr/bin/env bash
# One config key swept over a list of values, seeds $SEEDS (the paper's ablations):
#   bash scripts/ablation.sh DATASET CFG SHOTS KEY v1,v2,... [TRAINER=CLIP_Adapter] [KEY VALUE ...]
#   -> $OUTPUT/ablation/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots/<variant>/seed<S>
# e.g. bash scripts/ablation.sh dtd rn50 16 TRAINER.CLIP_ADAPTER.RATIO 0,0.2,0.4,0.6,0.8,1.0
# Every run shares the frozen-feature cache. Env and options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment ablation "$@"
