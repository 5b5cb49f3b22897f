#!/usr/bin/env bash
# CoOp with its three flags in the folder name, as CoOp's own scripts do:
#   bash scripts/coop.sh DATASET CFG SHOTS [NCTX=16] [CSC=False] [CTP=end] [KEY VALUE ...]
#   -> $OUTPUT/<DATASET>/CoOp/<CFG>_<SHOTS>shots/nctx<NCTX>_csc<CSC>_ctp<CTP>/seed<S>
# CTP (class token position): end | middle | front. Env and options: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment coop "$@"
