#!/usr/bin/env bash
# Zero-shot CLIP (no training; the number does not depend on seed or shots, so one seed by default):
#   bash scripts/zeroshot.sh DATASET CFG [TRAINER=ZeroshotCLIP] [KEY VALUE ...]
#   -> $OUTPUT/<DATASET>/<TRAINER>/<CFG>[/<variant>]/seed1
# TRAINER ZeroshotCLIP2 uses the ImageNet template ensemble. Env: DATA, OUTPUT, SEEDS (default "1").
# Accepts the sweep options (--launcher, --jobs, SLURM options; see scripts/common.sh).
set -euo pipefail
SEEDS="${SEEDS:-1}"
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}

if [[ $# -lt 2 ]]; then
  echo "usage: bash scripts/zeroshot.sh DATASET CFG [TRAINER=ZeroshotCLIP] [KEY VALUE ...]" >&2
  exit 2
fi
DATASET="$1" CFG="$2"
shift 2
TRAINER="ZeroshotCLIP"
if [[ $# -gt 0 && "$1" != *.* ]]; then
  TRAINER="$1"
  shift
fi
is_training_free "$TRAINER" || die "$TRAINER trains; use scripts/main.sh for it (zeroshot.sh is for: $TRAINING_FREE_TRAINERS)"
dataset_config "$DATASET" >/dev/null
trainer_config "$TRAINER" "$CFG" >/dev/null
require_data "$DATASET"
SUFFIX="$(variant_suffix "$@")"

BASE="$OUTPUT/$DATASET/$TRAINER/$CFG${SUFFIX:+/$SUFFIX}"
sweep_begin
for SEED in $SEEDS; do
  run_one "$BASE/seed$SEED" "$DATASET" "$TRAINER" "$CFG" "$SEED" --eval-only -- "$@"
done
sweep_end
