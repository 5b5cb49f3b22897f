#!/usr/bin/env bash
# Distribution shift and cross-dataset transfer, step 1: train on the source dataset (ImageNet),
# 16 shots, all classes (CoCoOp's xd_train.sh):
#   bash scripts/xd_train.sh SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]
#   -> $OUTPUT/<SOURCE>/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/seed<SEED>
# That is main.sh's folder, so a finished 16-shot ImageNet run is reused, not redone. Then
# scripts/xd_test.sh evaluates the model on each target. Training-free trainers (zero-shot CLIP)
# need no training step.
# Env: SOURCE (default imagenet; smoke offline), SHOTS (default 16), DATA, OUTPUT. Accepts the
# sweep options (--launcher, --jobs, SLURM options; see scripts/common.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}

if [[ $# -lt 1 ]]; then
  echo "usage: [SOURCE=imagenet] bash scripts/xd_train.sh SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]" >&2
  exit 2
fi
SEED="$1"
shift
TRAINER=CLIP_Adapter CFG=rn50
[[ $# -gt 0 && "$1" != *.* ]] && { TRAINER="$1"; shift; }
[[ $# -gt 0 && "$1" != *.* ]] && { CFG="$1"; shift; }
SOURCE="${SOURCE:-imagenet}"
SHOTS="${SHOTS:-16}"
[[ "$SEED" =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, got '$SEED'"
[[ "$SHOTS" =~ ^[0-9]+$ && "$SHOTS" -gt 0 ]] || die "SHOTS must be a positive integer, got '$SHOTS'"
if is_training_free "$TRAINER"; then
  echo "$TRAINER needs no training: scripts/xd_test.sh evaluates it directly on each target"
  exit 0
fi
dataset_config "$SOURCE" >/dev/null
trainer_config "$TRAINER" "$CFG" >/dev/null
require_data "$SOURCE"
SUFFIX="$(variant_suffix "$@")"

OUT="$OUTPUT/$SOURCE/$TRAINER/${CFG}_${SHOTS}shots${SUFFIX:+/$SUFFIX}/seed$SEED"
sweep_begin
run_one "$OUT" "$SOURCE" "$TRAINER" "$CFG" "$SEED" -- DATASET.NUM_SHOTS "$SHOTS" "$@"
sweep_end
