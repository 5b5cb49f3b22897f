# Shared by every script in scripts/ (sourced, not run). Each script is one call of the experiment
# planner, `clip-adapter experiment NAME "$@"` (clip_adapter/app/experiments/), which builds every
# run's train.py command, runs the runs and hands them to the sweep.
#
# Environment:
#   DATA     folder holding the datasets (CoOp layout). Required, except for the generated smoke
#            datasets, which default to ./data.
#   OUTPUT   output root (default: output), relative to the current directory like CoOp's scripts.
#   SEEDS    seeds to run (default: "1 2 3"; spaces or commas). Training-free trainers run the first.
#   PYTHON   the interpreter (default: python, else python3).
#   CLIP_ADAPTER_FEATURE_CACHE  the frozen-feature cache shared by all runs (default: $OUTPUT/feature_cache).
#   DRY_RUN=1  print each run's command instead of running it.
#   SHOTS, SOURCE  (base2new_*, xd_*) shots of the trained model (16) and transfer source (imagenet).
#
# Options (every script, anywhere before a lone --; `bash scripts/main.sh --help` lists them):
#   --status  each run's state; exit 0 all finished, 1 some failed, 3 some not finished yet
#   --launcher local|slurm  --jobs N  --gpus LIST  --wait  --dry-run  --cluster slurm|local
#   --cluster-config FILE  --partition P  --time T  --gpus-per-node G  --cpus-per-task C  --mem M
#   --array-parallelism A  --account A  --qos Q  --submitit-dir DIR
# Without them the runs run one after the other in the foreground: finished ones (results.json) are
# skipped, unfinished ones resumed. Exit status: 0 every run finished, 1 some failed, 2 bad input,
# 3 some not finished yet (queued on SLURM), 130 interrupted.
if [[ -z "${PYTHON:-}" ]]; then
  if command -v python >/dev/null 2>&1; then PYTHON=python; else PYTHON=python3; fi
fi

# experiment NAME ARGS...: run the planner for this script (replaces the shell).
experiment() {
  exec "$PYTHON" -m clip_adapter experiment "$@"
}
