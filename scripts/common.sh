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
#
# Sweep options (every script accepts them, anywhere before a lone --; see parse_sweep_args):
#   --launcher local|slurm  --jobs N  --gpus LIST  --status  --wait  --cluster slurm|local
#   --cluster-config FILE  --partition P  --time T  --gpus-per-node G  --cpus-per-task C  --mem M
#   --array-parallelism A  --account A  --qos Q
# Without them a script runs its runs one after the other in the foreground. With them its runs
# become a job list that `python -m clip_adapter.sweep` executes (clip_adapter/sweep.py).

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

# dataset_name DATASET -> the registered name in configs/datasets/DATASET.yaml (imagenet -> ImageNet)
dataset_name() {
  local path
  path="$(dataset_config "$1")" || exit 2
  "$PYTHON" -c 'import sys, yaml; print(yaml.safe_load(open(sys.argv[1]))["DATASET"]["NAME"])' "$path" \
    || die "cannot read DATASET.NAME from $path"
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
# The naming lives in clip_adapter/app/results/variants.py so the tables label rows the same way.
variant_suffix() {
  if [[ $# -eq 0 ]]; then
    echo ""
    return 0
  fi
  "$PYTHON" -c 'import sys; from clip_adapter.app.results.variants import suffix_cli; sys.exit(suffix_cli(sys.argv[1:]))' "$@"
}

# ------------------------------------------------------------------------------------- sweeps
# A script that accepts the sweep options does, in this order:
#   parse_sweep_args "$@"; set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}   # before its own parsing
#   sweep_begin                                                         # before its first run_one
#   run_one ...                                                         # as before
#   sweep_end                                                           # after its last run_one
# Without sweep options all three are no-ops and run_one runs train.py itself. With them, run_one
# appends each run to the job list $CLIP_ADAPTER_JOBLIST and sweep_end hands the list to
# `python -m clip_adapter.sweep` (local worker pool or SLURM). A script called by another script
# (reproduce.sh -> main.sh) sees the caller's job list in the environment and only appends to it.
SWEEP_ARGS=()
SWEEP_REST=()
SWEEP_OWNER=0
SWEEP_INCOMPLETE=0

# parse_sweep_args ARGS...: sweep options -> SWEEP_ARGS, everything else (in order) -> SWEEP_REST.
# Parsing stops at a lone -- (what follows it is passed through untouched).
parse_sweep_args() {
  SWEEP_ARGS=()
  SWEEP_REST=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --)
        SWEEP_REST+=("$@")
        break
        ;;
      --status | --wait)
        SWEEP_ARGS+=("$1")
        shift
        ;;
      --launcher | --jobs | --gpus | --cluster | --cluster-config | --partition | --time | --gpus-per-node | \
        --cpus-per-task | --mem | --array-parallelism | --account | --qos)
        [[ $# -ge 2 && -n "$2" && "$2" != --* ]] || die "$1 needs a value (e.g. --launcher local --jobs 4, or --launcher slurm --partition gpu)"
        SWEEP_ARGS+=("$1" "$2")
        shift 2
        ;;
      --launcher=* | --jobs=* | --gpus=* | --cluster=* | --cluster-config=* | --partition=* | --time=* | \
        --gpus-per-node=* | --cpus-per-task=* | --mem=* | --array-parallelism=* | --account=* | --qos=*)
        SWEEP_ARGS+=("$1")
        shift
        ;;
      *)
        SWEEP_REST+=("$1")
        shift
        ;;
    esac
  done
}

# sweep_begin: start collecting runs into a job list when sweep options were given (and no calling
# script collects them already). The options are checked first, so a typo fails before any work.
sweep_begin() {
  SWEEP_OWNER=0
  [[ -n "${CLIP_ADAPTER_JOBLIST:-}" ]] && return 0
  [[ ${#SWEEP_ARGS[@]} -gt 0 ]] || return 0
  "$PYTHON" -m clip_adapter.sweep --check "${SWEEP_ARGS[@]}" || exit 2
  CLIP_ADAPTER_JOBLIST="$(mktemp "${TMPDIR:-/tmp}/clip_adapter_joblist.XXXXXX")"
  export CLIP_ADAPTER_JOBLIST
  SWEEP_OWNER=1
  trap 'rm -f "$CLIP_ADAPTER_JOBLIST"' EXIT
}

# sweep_end: execute the collected job list (only the script that began it does). Returns 0 when
# every run is finished, 1 when some failed. When runs were submitted to SLURM and are not done yet,
# or --status found runs that are not finished, it returns 0 with SWEEP_INCOMPLETE=1. Ctrl-C exits.
sweep_end() {
  [[ "$SWEEP_OWNER" == 1 ]] || return 0
  local extra=() rc=0
  [[ "${DRY_RUN:-0}" == 1 ]] && extra+=(--dry-run)
  "$PYTHON" -m clip_adapter.sweep "$CLIP_ADAPTER_JOBLIST" --submitit-dir "$OUTPUT/submitit" \
    "${SWEEP_ARGS[@]}" ${extra[@]+"${extra[@]}"} || rc=$?
  [[ "$rc" == 130 ]] && exit 130
  if [[ " ${SWEEP_ARGS[*]} " == *" --status "* && "$rc" != 2 ]]; then
    [[ "$rc" == 0 ]] || SWEEP_INCOMPLETE=1
    return 0
  fi
  case "$rc" in
    0) return 0 ;;
    3) SWEEP_INCOMPLETE=1; return 0 ;;
    *) return "$rc" ;;
  esac
}

# _json_str TEXT: TEXT as the body of a JSON string, in REPLY (no subshell: run_one is called per run).
_json_str() {
  local s="$1"
  s="${s//\\/\\\\}"
  s="${s//\"/\\\"}"
  s="${s//$'\n'/\\n}"
  s="${s//$'\t'/\\t}"
  s="${s//$'\r'/\\r}"
  REPLY="$s"
}

# sweep_has_run OUTDIR: true when OUTDIR is already in the job list being collected (so a later
# step, e.g. base2new_test.sh, may depend on it: the sweep orders the runs).
sweep_has_run() {
  [[ -n "${CLIP_ADAPTER_JOBLIST:-}" && -f "$CLIP_ADAPTER_JOBLIST" ]] || return 1
  _json_str "$1"
  grep -qF "{\"output_dir\": \"$REPLY\"," "$CLIP_ADAPTER_JOBLIST"
}

# run_one OUTDIR DATASET TRAINER CFG SEED [CLI flags ...] -- [KEY VALUE opts ...]
# The only place that builds (and, outside a sweep, runs) a train.py command. A finished run
# (results.json) is skipped; an unfinished one (a folder without results.json) is handed to the
# CLI, which resumes it from its newest checkpoint or restarts it. Inside a sweep the command is
# appended to the job list instead, as {"output_dir": ..., "cmd": [...]} (one JSON object a line).
run_one() {
  local outdir="$1" dataset="$2" trainer="$3" cfg="$4" seed="$5"
  shift 5
  local flags=()
  while [[ $# -gt 0 && "$1" != "--" ]]; do
    flags+=("$1")
    shift
  done
  [[ $# -gt 0 ]] && shift
  # (a sweep gets finished runs too: it reports them, and they tell it which feature caches are warm)
  if [[ -z "${CLIP_ADAPTER_JOBLIST:-}" && -f "$outdir/results.json" ]]; then
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
  if [[ "${DRY_RUN:-0}" == 1 && ! -f "$outdir/results.json" ]]; then
    printf 'dry-run:'
    printf ' %q' "${cmd[@]}"
    printf '\n'
  fi
  if [[ -n "${CLIP_ADAPTER_JOBLIST:-}" ]]; then
    local line arg sep=""
    _json_str "$outdir"
    line="{\"output_dir\": \"$REPLY\", \"cmd\": ["
    for arg in "${cmd[@]}"; do
      _json_str "$arg"
      line+="$sep\"$REPLY\""
      sep=", "
    done
    printf '%s]}\n' "$line" >>"$CLIP_ADAPTER_JOBLIST"
    return 0
  fi
  [[ "${DRY_RUN:-0}" == 1 ]] && return 0
  if [[ -d "$outdir" ]]; then
    echo "==> $outdir (unfinished: resuming or restarting)"
  else
    echo "==> $outdir"
  fi
  "${cmd[@]}"
}

# parse_dataset_seed_args USAGE ARGS...: the "DATASET SEED [TRAINER=CLIP_Adapter] [CFG=rn50] [KEY VALUE ...]"
# arguments of the base-to-novel and cross-dataset scripts. Sets DATASET SEED TRAINER CFG, and DS_REST
# to the KEY VALUE opts that follow (the 3rd/4th argument is a trainer/config unless it looks like KEY.NAME).
parse_dataset_seed_args() {
  local usage="$1"
  shift
  if [[ $# -lt 2 ]]; then
    echo "usage: $usage" >&2
    exit 2
  fi
  DATASET="$1" SEED="$2"
  shift 2
  TRAINER=CLIP_Adapter CFG=rn50
  [[ $# -gt 0 && "$1" != *.* ]] && { TRAINER="$1"; shift; }
  [[ $# -gt 0 && "$1" != *.* ]] && { CFG="$1"; shift; }
  [[ "$SEED" =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, got '$SEED'"
  DS_REST=("$@")
}
