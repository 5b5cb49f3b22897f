#!/usr/bin/env bash
# One config key swept over a list of values, seeds 1 2 3 (the paper's ablations):
#   bash scripts/ablation.sh DATASET CFG SHOTS KEY v1,v2,... [TRAINER=CLIP_Adapter] [KEY VALUE ...]
#   -> $OUTPUT/ablation/<DATASET>/<TRAINER>/<CFG>_<SHOTS>shots/<variant>/seed<S>
# where <variant> names the swept value (and any fixed extra opts), e.g. ratio0.2, red16, typetext:
#   bash scripts/ablation.sh dtd rn50 16 TRAINER.CLIP_ADAPTER.RATIO 0,0.2,0.4,0.6,0.8,1.0
#   bash scripts/ablation.sh imagenet rn50 16 TRAINER.CLIP_ADAPTER.REDUCTION 2,4,8,16,32
#   bash scripts/ablation.sh eurosat rn50 16 TRAINER.CLIP_ADAPTER.TYPE visual,text,both
# Every run shares the frozen-feature cache, so the sweep encodes each image (and view) once:
# the first run of each seed fills the cache, the others read it. `python -m clip_adapter.app.results`
# prints one table per swept key (rows: values, columns: datasets) and --plot-ablation draws it.
# Env: DATA, OUTPUT, SEEDS (default "1 2 3"). Accepts the sweep options (--launcher, --jobs, SLURM
# options; see scripts/common.sh): the runs share the cache safely (it is file-locked).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}

if [[ $# -lt 5 ]]; then
  echo "usage: bash scripts/ablation.sh DATASET CFG SHOTS KEY v1,v2,... [TRAINER=CLIP_Adapter] [KEY VALUE ...]" >&2
  echo "  e.g. bash scripts/ablation.sh smoke tiny 4 TRAINER.CLIP_ADAPTER.RATIO 0,0.2,0.6   (offline)" >&2
  exit 2
fi
DATASET="$1" CFG="$2" SHOTS="$3" KEY="$4" VALUES="$5"
shift 5
TRAINER=CLIP_Adapter
[[ $# -gt 0 && "$1" != *.* ]] && { TRAINER="$1"; shift; }
[[ "$SHOTS" =~ ^[0-9]+$ && "$SHOTS" -gt 0 ]] || die "SHOTS must be a positive integer, got '$SHOTS'"
[[ "$KEY" == *.* || "$KEY" =~ ^[A-Z_]+$ ]] || die "KEY must be a config key such as TRAINER.CLIP_ADAPTER.RATIO, got '$KEY'"
IFS=',' read -r -a VALUE_LIST <<<"$VALUES"
[[ ${#VALUE_LIST[@]} -ge 1 ]] || die "no values to sweep: pass them comma-separated, e.g. 0,0.2,0.4"
for V in "${VALUE_LIST[@]}"; do
  [[ -n "$V" ]] || die "empty value in '$VALUES': pass them comma-separated without blanks, e.g. 0,0.2,0.4"
done
dataset_config "$DATASET" >/dev/null
trainer_config "$TRAINER" "$CFG" >/dev/null
require_data "$DATASET"
# The key must exist and take every value (a typo fails here, not after the first runs).
"$PYTHON" - "$KEY" "${VALUE_LIST[@]}" <<'PY' || exit 2
import sys
from clip_adapter.config import get_cfg_default, merge_from_list
from clip_adapter.plugins import load_all
load_all(quiet=True)
from clip_adapter.errors import UserError
key, values = sys.argv[1], sys.argv[2:]
seen = {}
try:
    for value in values:
        cfg = get_cfg_default()
        merge_from_list(cfg, [key, value], source="scripts/ablation.sh KEY and values")
        node = cfg
        for part in key.split("."):
            node = node[part]
        if repr(node) in seen:
            sys.exit(f"error: values {seen[repr(node)]!r} and {value!r} of {key} are the same setting; pass each value once")
        seen[repr(node)] = value
except UserError as exc:
    sys.exit(f"error: {exc}")
PY

# Check every value's folder name before the first run, so a bad value or key fails in a second.
declare -A SEEN=()
SUFFIXES=()
for V in "${VALUE_LIST[@]}"; do
  S="$(variant_suffix "$KEY" "$V" "$@")"
  [[ -n "$S" ]] || die "$KEY does not change a run's numbers (the results tool ignores it), so there is nothing to ablate"
  [[ -z "${SEEN[$S]:-}" ]] || die "values '${SEEN[$S]}' and '$V' of $KEY give the same run folder ($S); pass each value once"
  SEEN[$S]="$V"
  SUFFIXES+=("$S")
done

BASE="$OUTPUT/ablation/$DATASET/$TRAINER/${CFG}_${SHOTS}shots"
sweep_begin
for i in "${!VALUE_LIST[@]}"; do
  for SEED in $SEEDS; do
    run_one "$BASE/${SUFFIXES[$i]}/seed$SEED" "$DATASET" "$TRAINER" "$CFG" "$SEED" -- \
      DATASET.NUM_SHOTS "$SHOTS" "$KEY" "${VALUE_LIST[$i]}" EXPERIMENT.SWEEP_KEY "$KEY" "$@"
  done
done
sweep_end
