#!/usr/bin/env bash
# The paper's comparison in one command, then the tables (and few-shot curves):
#   few-shot: ZeroshotCLIP, CoOp, CLIP_Adapter on 11 datasets, 1 2 4 8 16 shots, seeds 1 2 3
#   base-to-novel: train on base classes (16 shots), test on new and base, seeds 1 2 3
#
#   bash scripts/reproduce.sh [--datasets "caltech101 dtd ..."] [--shots "1 2 4 8 16"]
#        [--trainers "ZeroshotCLIP CoOp CLIP_Adapter"] [--backbone rn50] [--seeds "1 2 3"]
#        [--no-fewshot] [--no-base2new] [--published] [-- KEY VALUE ...]
#
# --backbone names the config file of every trainer (rn50, rn101, vit_b32, vit_b16, or tiny for the
# offline check: --datasets smoke --backbone tiny). KEY VALUE opts after -- go to every run.
# Resumable: finished runs are skipped, unfinished ones resumed, so re-running redoes nothing.
# A failing run does not stop the others; they are listed at the end (exit status 1).
# Env: DATA, OUTPUT (default output). Tables: $OUTPUT/tables.md, curves: $OUTPUT/fewshot_curves.png.
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/common.sh"

DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
SHOTS_LIST="1 2 4 8 16"
TRAINERS="ZeroshotCLIP CoOp CLIP_Adapter"
BACKBONE=rn50
SEED_LIST="${SEEDS:-1 2 3}"
DO_FEWSHOT=1 DO_B2N=1 PUBLISHED=()
EXTRA=()

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --datasets) need "$@"; DATASETS="$2"; shift 2 ;;
    --shots) need "$@"; SHOTS_LIST="$2"; shift 2 ;;
    --trainers) need "$@"; TRAINERS="$2"; shift 2 ;;
    --backbone) need "$@"; BACKBONE="$2"; shift 2 ;;
    --seeds) need "$@"; SEED_LIST="$2"; shift 2 ;;
    --no-fewshot) DO_FEWSHOT=0; shift ;;
    --no-base2new) DO_B2N=0; shift ;;
    --published) PUBLISHED=(--published); shift ;;
    -h|--help) usage ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "unknown option '$1' (see bash scripts/reproduce.sh --help)" ;;
  esac
done
# rn50 | RN50 | ViT-B/16 | vit_b16 -> the config name (rn50, vit_b16, ...)
CFG="$(echo "$BACKBONE" | tr 'A-Z' 'a-z' | sed -e 's#vit-b/#vit_b#' -e 's#[-/]#_#g')"

# Check every name before the first run, so a typo fails in a second, not hours in.
for T in $TRAINERS; do trainer_config "$T" "$CFG" >/dev/null; done
for D in $DATASETS; do dataset_config "$D" >/dev/null; require_data "$D"; done
for S in $SHOTS_LIST; do [[ "$S" =~ ^[0-9]+$ && "$S" -gt 0 ]] || die "--shots: '$S' is not a positive integer"; done
for S in $SEED_LIST; do [[ "$S" =~ ^[0-9]+$ ]] || die "--seeds: '$S' is not a non-negative integer"; done
variant_suffix ${EXTRA[@]+"${EXTRA[@]}"} >/dev/null

# CoOp's per-shot schedule, as in its README: ImageNet uses <cfg>_ep50 throughout; elsewhere 1 shot
# <cfg>_ep50, 2 and 4 shots <cfg>_ep100, 8 and 16 shots <cfg> (200 epochs). Falls back to <cfg>
# where those files do not exist (e.g. tiny). The tables show them as one row (see results.py).
coop_cfg() {
  local dataset="$1" shots="$2" pick
  if [[ "$dataset" == imagenet ]] || (( shots <= 1 )); then
    pick="${CFG}_ep50"
  elif (( shots <= 4 )); then
    pick="${CFG}_ep100"
  else
    pick="$CFG"
  fi
  [[ -f "$REPO_ROOT/configs/trainers/CoOp/$pick.yaml" ]] || pick="$CFG"
  echo "$pick"
}

FAILED=()
step() {  # step DESCRIPTION COMMAND...: run one unit, remember a failure and go on
  local what="$1"
  shift
  if ! "$@"; then
    FAILED+=("$what")
    echo "FAILED: $what (continuing; re-run reproduce.sh to retry it)" >&2
    return 1
  fi
}

if [[ $DO_FEWSHOT == 1 ]]; then
  for D in $DATASETS; do
    for T in $TRAINERS; do
      if is_training_free "$T"; then
        step "zero-shot $T $D" env SEEDS="1" bash "$HERE/zeroshot.sh" "$D" "$CFG" "$T" ${EXTRA[@]+"${EXTRA[@]}"} || true
        continue
      fi
      for K in $SHOTS_LIST; do
        if [[ "$T" == CoOp ]]; then
          step "few-shot $T $D ${K} shots" env SEEDS="$SEED_LIST" bash "$HERE/coop.sh" "$D" "$(coop_cfg "$D" "$K")" "$K" 16 False end ${EXTRA[@]+"${EXTRA[@]}"} || true
        else
          step "few-shot $T $D ${K} shots" env SEEDS="$SEED_LIST" bash "$HERE/main.sh" "$D" "$CFG" "$K" "$T" ${EXTRA[@]+"${EXTRA[@]}"} || true
        fi
      done
    done
  done
fi

if [[ $DO_B2N == 1 ]]; then
  for D in $DATASETS; do
    for T in $TRAINERS; do
      SEEDS_B2N="$SEED_LIST" TCFG="$CFG"
      is_training_free "$T" && SEEDS_B2N="1"  # deterministic: one evaluation is enough
      [[ "$T" == CoOp ]] && TCFG="$(coop_cfg "$D" 16)"
      for S in $SEEDS_B2N; do
        if is_training_free "$T" || step "base2new train $T $D seed $S" bash "$HERE/base2new_train.sh" "$D" "$S" "$T" "$TCFG" ${EXTRA[@]+"${EXTRA[@]}"}; then
          step "base2new test $T $D seed $S" bash "$HERE/base2new_test.sh" "$D" "$S" "$T" "$TCFG" ${EXTRA[@]+"${EXTRA[@]}"} || true
        fi
      done
    done
  done
fi

N_SEEDS="$(echo $SEED_LIST | wc -w)"
TABLE_ARGS=(--expected-seeds "$N_SEEDS" --out "$OUTPUT/tables.md" ${PUBLISHED[@]+"${PUBLISHED[@]}"})
if [[ $DO_FEWSHOT == 1 ]]; then
  for T in $TRAINERS; do
    is_training_free "$T" || { TABLE_ARGS+=(--plot "$OUTPUT/fewshot_curves.png"); break; }
  done
fi
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  echo "dry run: no tables"
elif "$PYTHON" -m clip_adapter.results "$OUTPUT" "${TABLE_ARGS[@]}"; then
  cat "$OUTPUT/tables.md"
else
  FAILED+=("tables (python -m clip_adapter.results $OUTPUT)")
fi

if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo >&2
  echo "${#FAILED[@]} unit(s) failed (their rows show 'missing'); fix the cause and re-run the same command:" >&2
  printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi
