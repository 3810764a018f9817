#!/usr/bin/env bash
# Re-create the runs shipped in checkpoints/: SimCLR and triCL on mnist5k, and CLIP and triCLIP on
# mnist5k-captions (text width 64, to keep checkpoints/ small), seeds 0-2, identical settings
# otherwise. Uses only the project's own commands. About 25 min on an idle 2-core CPU.
#   bash scripts/make_shipped_runs.sh [EXTRA tricl train FLAGS...]
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=checkpoints
EPOCHS=${EPOCHS:-15}
for method in simclr tricl; do
  for seed in 0 1 2; do
    tricl train --method "$method" --dataset mnist5k --seed "$seed" --epochs "$EPOCHS" \
      --runs-root "$ROOT" --no-progress "$@"
  done
done
for method in clip triclip; do
  for seed in 0 1 2; do
    tricl train --method "$method" --dataset mnist5k-captions --seed "$seed" --epochs "$EPOCHS" \
      --text-width 64 --runs-root "$ROOT" --no-progress "$@"
  done
done
# finished runs need no optimizer state: ship weights, config and metrics only (small in git)
rm -f "$ROOT"/*/train_state.pt
# the analysis artifacts are shipped too, so the dashboard opens without computing
tricl analyze "$ROOT"/*_mnist5k_*
tricl compare "$ROOT"/tricl_mnist5k_*                          # also estimates the spectral bases
tricl compare "$ROOT"/simclr_mnist5k_*
tricl analyze "$ROOT"/*_mnist5k_* --basis spectral             # features in the spectral basis
tricl compare "$ROOT"/tricl_mnist5k_* --basis spectral
tricl compare "$ROOT"/simclr_mnist5k_* --basis spectral
tricl compare "$ROOT"/*_mnist5k_* --consensus                   # ranks shared by all six runs
# image-text runs: image analyses + the text side (zero-shot, captions, factors), then both
# sides' identifiability in the trained axes and in the spectral bases
tricl analyze "$ROOT"/*_mnist5k-captions_*
tricl analyze "$ROOT"/*_mnist5k-captions_* --basis spectral
for method in clip triclip; do
  tricl compare "$ROOT"/${method}_mnist5k-captions_*
  tricl compare "$ROOT"/${method}_mnist5k-captions_* --basis spectral
done
tricl runs --runs-root "$ROOT"
