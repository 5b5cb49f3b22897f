# Shared by every script in scripts/ (sourced, not run). The one place that builds a run's command.
#
# Environment:
#   DATA     folder holding the datasets (CoOp layout). Required, except for the generated `smoke`
#            dataset, which defaults to ./data.
#   OUTPUT   output root (default: output), relative to the current directory like CoOp's scripts.
#   SEEDS    seeds to run (default: "1 2 3").
#   PYTHON   the interpreter (default: python, else python3).
#   CLIP_ADAPTER_FEATURE_CACHE  the frozen-feature cache shared by all runs (default: $OUTPUT/feature_cache).
#   DRY_RUN=1  print each run's command instead of running it.

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUTPUT="${OUTPUT:-output}"
SEEDS="${SEEDS:-1 2 3}"
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi
export CLIP_ADAPTER_FEATURE_CACHE="${CLIP_ADAPTER_FEATURE_CACHE:-$OUTPUT/feature_cache}"

# Trainers whose number does not depend on training data (their class sets needs_training = False):
# they get no training step (zeroshot.sh, base2new_test.sh evaluates them directly).
# tests/test_scripts.py checks this list against the registry.
TRAINING_FREE_TRAINERS="ZeroshotCLIP ZeroshotCLIP2"

die() {
  echo "error: $*" >&2
  exit 2
}

is_training_free() {
  [[ " $TRAINING_FREE_TRAINERS " == *" $1 "* ]]
}

# dataset_config DATASET -> path of configs/datasets/DATASET.yaml (or a clear error listing the known ones)
dataset_config() {
  local path="$REPO_ROOT/configs/datasets/$1.yaml"
  if [[ ! -f "$path" ]]; then
    local known
    known="$(cd "$REPO_ROOT/configs/datasets" && ls -- *.yaml 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ')"
    die "no dataset config $path for DATASET '$1'; known: ${known:-none}"
  fi
  echo "$path"
}

# trainer_config TRAINER CFG -> path of configs/trainers/TRAINER/CFG.yaml (or a clear error)
trainer_config() {
  local dir="$REPO_ROOT/configs/trainers/$1" path="$REPO_ROOT/configs/trainers/$1/$2.yaml"
  if [[ ! -d "$dir" ]]; then
    die "no configs for trainer '$1' in $REPO_ROOT/configs/trainers; known: $(ls "$REPO_ROOT/configs/trainers" | tr '\n' ' ')"
  fi
  if [[ ! -f "$path" ]]; then
    die "no config $path for trainer '$1'; known CFG names: $(cd "$dir" && ls -- *.yaml 2>/dev/null | sed 's/\.yaml$//' | tr '\n' ' ')"
  fi
  echo "$path"
}

# require_data DATASET: set and check DATA (the generated smoke dataset may default to ./data).
require_data() {
  if [[ -z "${DATA:-}" ]]; then
    if [[ "$1" == smoke* ]]; then
      DATA="$PWD/data"
      echo "DATA is not set: using $DATA for the generated '$1' dataset" >&2
    else
      die "DATA is not set: export DATA=/path/to/datasets (the folder holding the datasets in CoOp's layout, e.g. \$DATA/caltech-101), then rerun"
    fi
  fi
  if [[ ! -d "$DATA" ]]; then
    if [[ "$1" == smoke* ]]; then
      mkdir -p "$DATA"
    else
      die "DATA=$DATA does not exist: point DATA at the folder holding the datasets (see the README's data section)"
    fi
  fi
  export DATA
}

# variant_suffix KEY VALUE ...: the folder level for extra opts (empty when there are none).
# The naming lives in clip_adapter/results.py so the tables label rows the same way.
variant_suffix() {
  if [[ $# -eq 0 ]]; then
    echo ""
    return 0
  fi
  "$PYTHON" -c 'import sys; from clip_adapter.results import suffix_cli; sys.exit(suffix_cli(sys.argv[1:]))' "$@"
}

# run_one OUTDIR DATASET TRAINER CFG SEED [CLI flags ...] -- [KEY VALUE opts ...]
# The only place that runs train.py. A finished run (results.json) is skipped; an unfinished one
# (a folder without results.json) is handed to the CLI, which resumes it from its newest
# checkpoint or restarts it. A later sweep launcher can turn this into "append to a job list".
run_one() {
  local outdir="$1" dataset="$2" trainer="$3" cfg="$4" seed="$5"
  shift 5
  local flags=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do
    flags+=("$1")
    shift
  done
  [[ $# -gt 0 ]] && shift
  if [[ -f "$outdir/results.json" ]]; then
    echo "skip: $outdir is finished (results.json exists; delete the folder to rerun it)"
    return 0
  fi
  local dcfg tcfg
  dcfg="$(dataset_config "$dataset")"
  tcfg="$(trainer_config "$trainer" "$cfg")"
  local cmd=("$PYTHON" "$REPO_ROOT/train.py"
    --root "$DATA"
    --seed "$seed"
    --trainer "$trainer"
    --dataset-config-file "$dcfg"
    --config-file "$tcfg"
    --output-dir "$outdir"
    ${flags[@]+"${flags[@]}"}
    "$@")
  if [[ "${DRY_RUN:-0}" == 1 ]]; then
    printf 'dry-run:'
    printf ' %q' "${cmd[@]}"
    printf '\n'
    return 0
  fi
  if [[ -d "$outdir" ]]; then
    echo "==> $outdir (unfinished: resuming or restarting)"
  else
    echo "==> $outdir"
  fi
  "${cmd[@]}"
}
