#!/usr/bin/env bash
# Base-to-novel generalization, step 2: load the model trained on base classes and evaluate it on
# the new classes and on the base classes (so the table can compute HM):
#   bash scripts/base2new_test.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]
#   -> $OUTPUT/base2new/test_new/<DATASET>/shots_16/<TRAINER>/<CFG>[/<variant>]/seed<SEED>
#      $OUTPUT/base2new/test_base/...   (same levels)
# Training-free trainers (zero-shot CLIP) are evaluated directly, without a training folder.
# Env: DATA, OUTPUT, SHOTS (default 16). Accepts the sweep options (--launcher, --jobs, SLURM
# options; see scripts/common.sh); inside a sweep (reproduce.sh) the training run may still be
# queued: the sweep runs the tests after it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}

parse_dataset_seed_args "bash scripts/base2new_test.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]" "$@"
set -- ${DS_REST[@]+"${DS_REST[@]}"}
SHOTS="${SHOTS:-16}"
dataset_config "$DATASET" >/dev/null
trainer_config "$TRAINER" "$CFG" >/dev/null
require_data "$DATASET"
SUFFIX="$(variant_suffix "$@")"

LEAF="$DATASET/shots_$SHOTS/$TRAINER/$CFG${SUFFIX:+/$SUFFIX}/seed$SEED"
sweep_begin
MODEL_FLAGS=(--eval-only)
if ! is_training_free "$TRAINER"; then
  MODEL_DIR="$OUTPUT/base2new/train_base/$LEAF"
  if [[ ! -f "$MODEL_DIR/results.json" && "${DRY_RUN:-0}" != 1 ]] && ! sweep_has_run "$MODEL_DIR"; then
    die "the base-class training run $MODEL_DIR is not finished (no results.json): run 'bash scripts/base2new_train.sh $DATASET $SEED $TRAINER $CFG${*:+ $*}' first"
  fi
  MODEL_FLAGS+=(--model-dir "$MODEL_DIR")
fi
for SPLIT in new base; do
  run_one "$OUTPUT/base2new/test_$SPLIT/$LEAF" "$DATASET" "$TRAINER" "$CFG" "$SEED" "${MODEL_FLAGS[@]}" -- \
    DATASET.NUM_SHOTS "$SHOTS" DATASET.SUBSAMPLE_CLASSES "$SPLIT" "$@"
done
sweep_end
