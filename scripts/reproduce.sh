#!/usr/bin/env bash
# The paper's comparison in one command, then the tables (and few-shot curves):
#   few-shot: ZeroshotCLIP, CoOp, CLIP_Adapter on 11 datasets, 1 2 4 8 16 shots, seeds 1 2 3
#   base-to-novel: train on base classes (16 shots), test on new and base, seeds 1 2 3
#   dg: train on the source (ImageNet, 16 shots), test on ImageNet-V2/-Sketch/-A/-R (xd_train/xd_test.sh)
#   xd: the same models tested on the other datasets of --datasets (cross-dataset transfer)
#   ablation: CLIP-Adapter's RATIO, REDUCTION and TYPE swept (ablation.sh, 16 shots) on
#             --ablation-datasets (default: those of imagenet caltech101 dtd eurosat in --datasets)
#
#   bash scripts/reproduce.sh [--experiments fewshot,base2new,dg,xd,ablation] [--datasets "caltech101 dtd ..."]
#        [--shots "1 2 4 8 16"] [--trainers "ZeroshotCLIP CoOp CLIP_Adapter"] [--backbone rn50] [--seeds "1 2 3"]
#        [--source imagenet] [--dg-targets "..."] [--xd-targets "..."] [--ablation-datasets "..."]
#        [--ablations "KEY=v1,v2 ..."] [--no-fewshot] [--no-base2new] [--published] [-- KEY VALUE ...]
#
# --experiments: which of the five to run (default: all). With --datasets smoke the source is smoke,
# the dg targets its shifted variants (smoke_gray smoke_invert smoke_blur smoke_subset) and the xd
# target smoke_other, so the whole flow runs offline. Trainers whose learned part is tied to their
# training classes (LinearProbeCLIP, CoOp with CSC True) are left out of xd (they are refused there).
#
# --backbone names the config file of every trainer (rn50, rn101, vit_b32, vit_b16, or tiny for the
# offline check: --datasets smoke --backbone tiny). KEY VALUE opts after -- go to every run.
# Resumable: finished runs are skipped, unfinished ones resumed, so re-running redoes nothing.
# A failing run does not stop the others; they are listed at the end (exit status 1).
# Env: DATA, OUTPUT (default output). Tables: $OUTPUT/tables.md, curves: $OUTPUT/fewshot_curves.png.
#
# Parallel: --jobs N (N local workers, one GPU each when there are GPUs) or --launcher slurm [--partition P
# --time T --gpus-per-node G --cpus-per-task C --mem M --array-parallelism A] (SLURM via submitit; defaults
# in configs/cluster.yaml); --status shows each run's state. See scripts/common.sh and clip_adapter/sweep.py.
set -euo pipefail
HERE="$(dirname "${BASH_SOURCE[0]}")"
source "$HERE/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}

DATASETS="imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101"
SHOTS_LIST="1 2 4 8 16"
TRAINERS="ZeroshotCLIP CoOp CLIP_Adapter"
BACKBONE=rn50
SEED_LIST="${SEEDS:-1 2 3}"
DO_FEWSHOT=1 DO_B2N=1 DO_DG=1 DO_XD=1 DO_ABLATION=1 PUBLISHED=()
XD_SOURCE="" DG_TARGETS="-" XD_TARGETS="-" ABLATION_DATASETS="-"
ABLATIONS="TRAINER.CLIP_ADAPTER.RATIO=0,0.2,0.4,0.6,0.8,1.0 TRAINER.CLIP_ADAPTER.REDUCTION=2,4,8,16,32 TRAINER.CLIP_ADAPTER.TYPE=visual,text,both"
set_experiments() {
  DO_FEWSHOT=0 DO_B2N=0 DO_DG=0 DO_XD=0 DO_ABLATION=0
  local e
  for e in ${1//,/ }; do
    case "$e" in
      fewshot) DO_FEWSHOT=1 ;;
      base2new) DO_B2N=1 ;;
      dg) DO_DG=1 ;;
      xd) DO_XD=1 ;;
      ablation) DO_ABLATION=1 ;;
      *) die "--experiments: unknown experiment '$e'; choose from fewshot,base2new,dg,xd,ablation" ;;
    esac
  done
}
EXTRA=()

usage() {
  awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}" >&2
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
    --experiments) need "$@"; set_experiments "$2"; shift 2 ;;
    --source) need "$@"; XD_SOURCE="$2"; shift 2 ;;
    --dg-targets) need "$@"; DG_TARGETS="$2"; shift 2 ;;
    --xd-targets) need "$@"; XD_TARGETS="$2"; shift 2 ;;
    --ablation-datasets) need "$@"; ABLATION_DATASETS="$2"; shift 2 ;;
    --ablations) need "$@"; ABLATIONS="$2"; shift 2 ;;
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

# Transfer and ablation defaults follow the datasets: the paper's ImageNet source, or smoke offline.
if [[ -z "$XD_SOURCE" ]]; then
  XD_SOURCE=imagenet
  [[ " $DATASETS " != *" imagenet "* && " $DATASETS " == *" smoke "* ]] && XD_SOURCE=smoke
fi
if [[ "$DG_TARGETS" == "-" ]]; then
  case "$XD_SOURCE" in
    imagenet) DG_TARGETS="imagenetv2 imagenet_sketch imagenet_a imagenet_r" ;;
    smoke) DG_TARGETS="smoke_gray smoke_invert smoke_blur smoke_subset" ;;
    *) DG_TARGETS="" ;;
  esac
fi
if [[ "$XD_TARGETS" == "-" ]]; then
  XD_TARGETS=""
  for D in $DATASETS; do [[ "$D" == "$XD_SOURCE" ]] || XD_TARGETS+="$D "; done
  [[ "$XD_SOURCE" == smoke ]] && XD_TARGETS+="smoke_other"
fi
if [[ "$ABLATION_DATASETS" == "-" ]]; then
  ABLATION_DATASETS=""
  for D in imagenet caltech101 dtd eurosat; do [[ " $DATASETS " == *" $D "* ]] && ABLATION_DATASETS+="$D "; done
  [[ -n "$ABLATION_DATASETS" ]] || ABLATION_DATASETS="$DATASETS"
fi
if [[ $DO_DG == 1 || $DO_XD == 1 ]]; then
  dataset_config "$XD_SOURCE" >/dev/null
  [[ $DO_DG == 1 ]] && for D in $DG_TARGETS; do dataset_config "$D" >/dev/null; require_data "$D"; done
  [[ $DO_XD == 1 ]] && for D in $XD_TARGETS; do dataset_config "$D" >/dev/null; require_data "$D"; done
fi
if [[ $DO_ABLATION == 1 ]]; then
  [[ " $TRAINERS " == *" CLIP_Adapter "* ]] || { echo "ablation: CLIP_Adapter is not among --trainers; no ablation runs" >&2; DO_ABLATION=0; }
  for D in $ABLATION_DATASETS; do dataset_config "$D" >/dev/null; require_data "$D"; done
  for A in $ABLATIONS; do [[ "$A" == *=?* ]] || die "--ablations: '$A' is not KEY=v1,v2,..."; done
fi
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
sweep_begin  # with sweep options, the steps below only collect runs; sweep_end runs them
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

# Transfer (dg, xd): CoOp gets coop.sh's opts so that its source run is the few-shot one.
transfer_args() {  # transfer_args TRAINER -> "CFG [KEY VALUE ...]" for xd_train/xd_test
  if [[ "$1" == CoOp ]]; then
    echo "$(coop_cfg "$XD_SOURCE" 16) TRAINER.COOP.N_CTX 16 TRAINER.COOP.CSC False TRAINER.COOP.CLASS_TOKEN_POSITION end"
  else
    echo "$CFG"
  fi
}
run_transfer() {  # run_transfer TARGETS...: every trainer trained on the source, tested on each target
  local T S D args
  for T in $TRAINERS; do
    read -r -a args <<<"$(transfer_args "$T")"
    if is_training_free "$T"; then
      # its source column is its own run on the source (zeroshot.sh's folder: skipped when done)
      step "zero-shot $T $XD_SOURCE" env SEEDS="1" bash "$HERE/zeroshot.sh" "$XD_SOURCE" "$CFG" "$T" ${EXTRA[@]+"${EXTRA[@]}"} || true
      for D in "$@"; do
        step "transfer $T $XD_SOURCE -> $D" env SOURCE="$XD_SOURCE" bash "$HERE/xd_test.sh" "$D" 1 "$T" "${args[@]}" ${EXTRA[@]+"${EXTRA[@]}"} || true
      done
      continue
    fi
    for S in $SEED_LIST; do
      step "transfer: train $T on $XD_SOURCE seed $S" env SOURCE="$XD_SOURCE" bash "$HERE/xd_train.sh" "$S" "$T" "${args[@]}" ${EXTRA[@]+"${EXTRA[@]}"} || continue
      for D in "$@"; do
        step "transfer $T $XD_SOURCE -> $D seed $S" env SOURCE="$XD_SOURCE" bash "$HERE/xd_test.sh" "$D" "$S" "$T" "${args[@]}" ${EXTRA[@]+"${EXTRA[@]}"} || true
      done
    done
  done
}
if [[ $DO_DG == 1 && -n "$DG_TARGETS" ]]; then
  run_transfer $DG_TARGETS
elif [[ $DO_DG == 1 ]]; then
  echo "dg: no distribution-shift targets known for source $XD_SOURCE (pass --dg-targets)" >&2
fi
if [[ $DO_XD == 1 && -n "$XD_TARGETS" ]]; then
  # Leave out the trainers whose learned part cannot classify other classes (they would be refused).
  TRANSFERABLE="" BLOCKED=""
  for T in $TRAINERS; do
    read -r -a args <<<"$(transfer_args "$T")"
    if "$PYTHON" - "$T" "$(trainer_config "$T" "${args[0]}")" "${args[@]:1}" ${EXTRA[@]+"${EXTRA[@]}"} <<'PY'; then TRANSFERABLE+="$T "; else BLOCKED+="$T "; fi
import sys
from clip_adapter.config import setup_cfg
from clip_adapter.plugins import load_all
load_all(quiet=True)
from clip_adapter.registry import TRAINERS
name, path, opts = sys.argv[1], sys.argv[2], sys.argv[3:]
reason = TRAINERS.get(name).transfer_blocker(setup_cfg("", path, {"TRAINER.NAME": name}, opts))
if reason:
    print(f"xd: {name} is left out: {reason}", file=sys.stderr)
    sys.exit(1)
PY
  done
  TRAINERS_ALL="$TRAINERS"
  TRAINERS="$TRANSFERABLE"
  run_transfer $XD_TARGETS
  TRAINERS="$TRAINERS_ALL"
fi
if [[ $DO_ABLATION == 1 ]]; then
  for D in $ABLATION_DATASETS; do
    for A in $ABLATIONS; do
      step "ablation ${A%%=*} on $D" env SEEDS="$SEED_LIST" bash "$HERE/ablation.sh" "$D" "$CFG" 16 "${A%%=*}" "${A#*=}" CLIP_Adapter ${EXTRA[@]+"${EXTRA[@]}"} || true
    done
  done
fi

sweep_end || FAILED+=("runs of the sweep (listed above with their logs)")

N_SEEDS="$(echo $SEED_LIST | wc -w)"
TABLE_ARGS=(--expected-seeds "$N_SEEDS" --out "$OUTPUT/tables.md" ${PUBLISHED[@]+"${PUBLISHED[@]}"})
[[ $DO_ABLATION == 1 ]] && TABLE_ARGS+=(--plot-ablation "$OUTPUT/ablation.png")
[[ "$CFG" == tiny || " $DATASETS " == *" smoke"* ]] && TABLE_ARGS+=(--include-offline-checks)  # offline checks: shown, labelled
if [[ $DO_FEWSHOT == 1 ]]; then
  for T in $TRAINERS; do
    is_training_free "$T" || { TABLE_ARGS+=(--plot "$OUTPUT/fewshot_curves.png"); break; }
  done
fi
if [[ "${DRY_RUN:-0}" == 1 ]]; then
  echo "dry run: no tables"
elif [[ "$SWEEP_INCOMPLETE" == 1 ]]; then
  echo "not every run is finished yet: once they are (check with the same command plus --status), make the tables with: $PYTHON -m clip_adapter.app.results $OUTPUT"
elif "$PYTHON" -m clip_adapter.app.results "$OUTPUT" "${TABLE_ARGS[@]}"; then
  cat "$OUTPUT/tables.md"
else
  FAILED+=("tables (python -m clip_adapter.app.results $OUTPUT)")
fi

if [[ ${#FAILED[@]} -gt 0 ]]; then
  echo >&2
  echo "${#FAILED[@]} unit(s) failed (their rows show 'missing'); fix the cause and re-run the same command:" >&2
  printf '  %s\n' "${FAILED[@]}" >&2
  exit 1
fi
