#!/usr/bin/env bash
# Offline pipeline check (`make demo`): the built-in smoke data with the tiny random CLIP, through
# the same scripts a real run uses (zeroshot.sh, main.sh, base2new_train/test.sh), then the tables
# and the few-shot curves. No GPU, weights or downloads; a couple of minutes on 2 CPU cores.
# Accuracies mean nothing here (random CLIP, synthetic images): this checks the plumbing.
# Env: DATA (default ./data), OUTPUT (default output/demo). Re-running reuses finished runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DATA="${DATA:-$PWD/data}"
export OUTPUT="${OUTPUT:-output/demo}"
mkdir -p "$OUTPUT"
LOG="$OUTPUT/demo.log"
: >"$LOG"

step() {  # step "what" command...: run quietly into the log; show the log's tail if it fails
  local what="$1"
  shift
  printf '%-62s' "$what"
  local t0=$SECONDS
  if ! "$@" >>"$LOG" 2>&1; then
    echo "FAILED"
    tail -n 25 "$LOG" >&2
    echo "(full log: $LOG)" >&2
    exit 1
  fi
  echo "done ($((SECONDS - t0))s)"
}

echo "Offline demo: smoke dataset + tiny random CLIP (accuracies mean nothing). Log: $LOG"
step "zero-shot CLIP" bash scripts/zeroshot.sh smoke tiny
for K in 1 4; do
  step "CLIP-Adapter, $K shot(s), seeds 1 2 3" env SEEDS="1 2 3" bash scripts/main.sh smoke tiny "$K" CLIP_Adapter
done
step "base-to-novel: CLIP-Adapter trained on base classes (seed 1)" bash scripts/base2new_train.sh smoke 1 CLIP_Adapter tiny
step "base-to-novel: CLIP-Adapter tested on new and base (seed 1)" bash scripts/base2new_test.sh smoke 1 CLIP_Adapter tiny
step "base-to-novel: zero-shot CLIP on new and base" bash scripts/base2new_test.sh smoke 1 ZeroshotCLIP tiny
echo
"${PYTHON:-python}" -m clip_adapter.results "$OUTPUT" --plot "$OUTPUT/fewshot_curves.png"
