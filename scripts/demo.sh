#!/usr/bin/env bash
# Offline pipeline check (`make demo`): the built-in smoke data with the tiny random CLIP, through
# the same scripts a real run uses (zeroshot.sh, main.sh, base2new_train/test.sh, xd_train/xd_test.sh,
# ablation.sh), then the tables, the few-shot curves and the ablation plot. No GPU, weights or
# downloads; a few minutes on 2 CPU cores.
# Accuracies mean nothing here (random CLIP, synthetic images): this checks the plumbing.
# Env: DATA (default ./data), OUTPUT (default output_demo: apart from the scripts' output/, so the
# tables of real runs never show the demo's). Re-running reuses finished runs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DATA="${DATA:-$PWD/data}"
export OUTPUT="${OUTPUT:-output_demo}"
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
step "transfer: CLIP-Adapter trained on smoke, 16 shots (seed 1)" env SOURCE=smoke bash scripts/xd_train.sh 1 CLIP_Adapter tiny
for D in smoke_gray smoke_subset smoke_other; do
  step "transfer: tested on $D (seed 1)" env SOURCE=smoke bash scripts/xd_test.sh "$D" 1 CLIP_Adapter tiny
done
step "ablation: CLIP-Adapter RATIO 0, 0.5 (4 shots, seed 1)" env SEEDS=1 bash scripts/ablation.sh smoke tiny 4 TRAINER.CLIP_ADAPTER.RATIO 0,0.5
echo
"${PYTHON:-python}" -m clip_adapter results "$OUTPUT" --include-offline-checks --plot "$OUTPUT/fewshot_curves.png" --plot-ablation "$OUTPUT/ablation.png"
