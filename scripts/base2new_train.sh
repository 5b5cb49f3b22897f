#!/usr/bin/env bash
# Base-to-novel generalization, step 1: train on the base classes (first half of the labels), 16 shots.
#   bash scripts/base2new_train.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]
#   -> $OUTPUT/base2new/train_base/<DATASET>/shots_16/<TRAINER>/<CFG>[/<variant>]/seed<SEED>   (CoCoOp's layout)
# Then scripts/base2new_test.sh evaluates on the new (and base) classes. Training-free trainers
# (zero-shot CLIP) need no training step. Env: DATA, OUTPUT, SHOTS (default 16).
# Accepts the sweep options (--launcher, --jobs, SLURM options; see scripts/common.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}

parse_dataset_seed_args "bash scripts/base2new_train.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]" "$@"
set -- ${DS_REST[@]+"${DS_REST[@]}"}
SHOTS="${SHOTS:-16}"
if is_training_free "$TRAINER"; then
  echo "$TRAINER needs no training: scripts/base2new_test.sh evaluates it directly on base and new classes"
  exit 0
fi
dataset_config "$DATASET" >/dev/null
trainer_config "$TRAINER" "$CFG" >/dev/null
require_data "$DATASET"
SUFFIX="$(variant_suffix "$@")"

OUT="$OUTPUT/base2new/train_base/$DATASET/shots_$SHOTS/$TRAINER/$CFG${SUFFIX:+/$SUFFIX}/seed$SEED"
sweep_begin
run_one "$OUT" "$DATASET" "$TRAINER" "$CFG" "$SEED" -- DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES base "$@"
sweep_end
