#!/usr/bin/env bash
# Distribution shift and cross-dataset transfer, step 2: evaluate the model that xd_train.sh trained
# on the source on one target dataset (CoCoOp's xd_test.sh):
#   bash scripts/xd_test.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]
#   -> $OUTPUT/evaluation/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/<DATASET>/seed<SEED>
#      (--eval-only --model-dir $OUTPUT/<SOURCE>/<TRAINER>/<CFG>_<SHOTS>shots[/<variant>]/seed<SEED>)
# With another SOURCE than imagenet the first level is evaluation_from_<SOURCE>, so that two
# sources never share an evaluation folder.
# Targets: imagenetv2 imagenet_sketch imagenet_a imagenet_r (distribution shift: ImageNet's classes,
# -A/-R a subset mapped to them) or any other dataset (cross-dataset: the text side is rebuilt for
# its class names). A trainer whose learned part is tied to its training classes (LinearProbeCLIP,
# CoOp with CSC True) is refused, with one line, on classes it was not trained on. Training-free
# trainers (zero-shot CLIP) are evaluated directly.
# Env: SOURCE (default imagenet; smoke offline), SHOTS (default 16), DATA, OUTPUT. Accepts the
# sweep options (--launcher, --jobs, SLURM options; see scripts/common.sh); inside a sweep
# (reproduce.sh) the training run may still be queued: the sweep runs the evaluation after it.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}

parse_dataset_seed_args "[SOURCE=imagenet] bash scripts/xd_test.sh DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]" "$@"
set -- ${DS_REST[@]+"${DS_REST[@]}"}
SOURCE="${SOURCE:-imagenet}"
SHOTS="${SHOTS:-16}"
[[ "$SHOTS" =~ ^[0-9]+$ && "$SHOTS" -gt 0 ]] || die "SHOTS must be a positive integer, got '$SHOTS'"
[[ "$DATASET" != "$SOURCE" ]] || die "DATASET is the source ($SOURCE): its accuracy is the training run's own (results.json in the xd_train.sh folder); pass a target dataset"
dataset_config "$SOURCE" >/dev/null
dataset_config "$DATASET" >/dev/null
trainer_config "$TRAINER" "$CFG" >/dev/null
require_data "$DATASET"
SUFFIX="$(variant_suffix "$@")"

EVAL_ROOT="$OUTPUT/evaluation"
[[ "$SOURCE" == imagenet ]] || EVAL_ROOT="$OUTPUT/evaluation_from_$SOURCE"
LEVEL="$TRAINER/${CFG}_${SHOTS}shots${SUFFIX:+/$SUFFIX}"
OUT="$EVAL_ROOT/$LEVEL/$DATASET/seed$SEED"
sweep_begin
if is_training_free "$TRAINER"; then
  # No model to load: the run records its source experiment so the tables place it in the right row.
  run_one "$OUT" "$DATASET" "$TRAINER" "$CFG" "$SEED" --eval-only -- EXPERIMENT.SOURCE "$(dataset_name "$SOURCE")" "$@"
else
  MODEL_DIR="$OUTPUT/$SOURCE/$LEVEL/seed$SEED"
  if [[ ! -f "$MODEL_DIR/results.json" && "${DRY_RUN:-0}" != 1 ]] && ! sweep_has_run "$MODEL_DIR"; then
    die "the training run $MODEL_DIR is not finished (no results.json): run 'SOURCE=$SOURCE bash scripts/xd_train.sh $SEED $TRAINER $CFG${*:+ $*}' first"
  fi
  run_one "$OUT" "$DATASET" "$TRAINER" "$CFG" "$SEED" --eval-only --model-dir "$MODEL_DIR" -- "$@"
fi
sweep_end
