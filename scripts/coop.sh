#!/usr/bin/env bash
# CoOp with its three flags in the folder name, as CoOp's own scripts do:
#   bash scripts/coop.sh DATASET CFG SHOTS [NCTX=16] [CSC=False] [CTP=end] [KEY VALUE ...]
#   -> $OUTPUT/<DATASET>/CoOp/<CFG>_<SHOTS>shots/nctx<NCTX>_csc<CSC>_ctp<CTP>/seed<S>
# CTP (class token position): end | middle | front. Env: DATA, OUTPUT, SEEDS.
# Accepts the sweep options (--launcher, --jobs, SLURM options; see scripts/common.sh).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
parse_sweep_args "$@"
set -- ${SWEEP_REST[@]+"${SWEEP_REST[@]}"}
if [[ $# -lt 3 ]]; then
  echo "usage: bash scripts/coop.sh DATASET CFG SHOTS [NCTX=16] [CSC=False] [CTP=end] [KEY VALUE ...]" >&2
  exit 2
fi
DATASET="$1" CFG="$2" SHOTS="$3"
shift 3
NCTX=16 CSC=False CTP=end
[[ $# -gt 0 && "$1" != *.* ]] && { NCTX="$1"; shift; }
[[ $# -gt 0 && "$1" != *.* ]] && { CSC="$1"; shift; }
[[ $# -gt 0 && "$1" != *.* ]] && { CTP="$1"; shift; }
exec bash "$(dirname "${BASH_SOURCE[0]}")/main.sh" ${SWEEP_ARGS[@]+"${SWEEP_ARGS[@]}"} "$DATASET" "$CFG" "$SHOTS" CoOp \
  TRAINER.COOP.N_CTX "$NCTX" TRAINER.COOP.CSC "$CSC" TRAINER.COOP.CLASS_TOKEN_POSITION "$CTP" "$@"
