#!/usr/bin/env bash
# The paper's comparison in one command, then the tables (and few-shot curves):
#   bash scripts/reproduce.sh [--experiments fewshot,base2new,dg,xd,ablation] [--datasets "caltech101 dtd ..."]
#        [--shots "1 2 4 8 16"] [--trainers ZeroshotCLIP,CoOp,CLIP_Adapter] [--backbone rn50] [--seeds 1,2,3]
#        [--source imagenet] [--dg-targets ...] [--xd-targets ...] [--ablation-datasets ...]
#        [--ablations "KEY=v1,v2 ..."] [--no-fewshot] [--no-base2new] [--published] [-- KEY VALUE ...]
# Lists take commas or spaces. Offline: --datasets smoke --backbone tiny. Details: bash scripts/reproduce.sh --help.
# Tables: $OUTPUT/tables.md. Env, sweep options, --status and exit statuses: scripts/common.sh.
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"
experiment reproduce "$@"
