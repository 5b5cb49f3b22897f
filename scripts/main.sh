#!/usr/bin/env bash
# Few-shot training, seeds 1 2 3, CoOp-style folders:
#   bash scripts/main.sh DATASET CFG SHOTS [TRAINER] [KEY VALUE ...]
#   -> $OUTPUT/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/seed<S>
# TRAINER defaults to CLIP_Adapter. Extra KEY VALUE opts override the config and name a variant
# folder (e.g. TRAINER.CLIP_ADAPTER.RATIO 0.6 -> .../rn50_16shots/ratio0.6/seed1).
# Finished runs are skipped; unfinished ones are resumed or restarted (never skipped).
# Env: DATA (datasets; smoke defaults to ./data), OUTPUT (default output), SEEDS (default "1 2 3").
# Sweep options (--launcher local|slurm, --jobs N, SLURM options; see scripts/common.sh) run the
# seeds in parallel: bash scripts/main.sh caltech101 rn50 16 --jobs 3
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}

usage() {
  echo "usage: bash scripts/main.sh DATASET CFG SHOTS [TRAINER=CLIP_Adapter] [KEY VALUE ...]" >&2
  echo "  e.g. DATA=/data bash scripts/main.sh caltech101 rn50 16" >&2
  echo "       bash scripts/main.sh smoke tiny 4 CLIP_Adapter    (offline check)" >&2
  exit 2
}
[[ $# -lt 3 ]] && usage
DATASET="$1" CFG="$2" SHOTS="$3"
shift 3
TRAINER="CLIP_Adapter"
# The 4th argument is the trainer unless it looks like a config key (KEY.NAME).
if [[ $# -gt 0 && "$1" != *.* ]]; then
  TRAINER="$1"
  shift
fi
[[ "$SHOTS" =~ ^[0-9]+$ && "$SHOTS" -gt 0 ]] || die "SHOTS must be a positive integer, got '$SHOTS'"
dataset_config "$DATASET" >/dev/null
trainer_config "$TRAINER" "$CFG" >/dev/null
require_data "$DATASET"
SUFFIX="$(variant_suffix "$@")"

BASE="$OUTPUT/$DATASET/$TRAINER/${CFG}_${SHOTS}shots${SUFFIX:+/$SUFFIX}"
sweep_begin
for SEED in $SEEDS; do
  run_one "$BASE/seed$SEED" "$DATASET" "$TRAINER" "$CFG" "$SEED" -- DATASET.NUM_SHOTS "$SHOTS" "$@"
done
sweep_end
