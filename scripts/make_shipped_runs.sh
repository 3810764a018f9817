#!/usr/bin/env bash
# Re-create the runs shipped in checkpoints/, seeds 0-2 of each group, identical settings otherwise:
#   two-view    SimCLR and triCL on mnist5k (and the consensus of their six runs)
#   tri-eigen   triCL with its rotation and S solved from running covariances, on mnist5k
#   image-text  CLIP and triCLIP on mnist5k-captions (text width 64, to keep checkpoints/ small)
# Each group: training, the analyses in both bases (trained, spectral) and the comparison of its
# seeds in both. Uses only the project's own commands. About 25 min for two-view and image-text
# on an idle 2-core CPU; a tri-eigen seed trains in about 3 min on one idle core (11 s an epoch;
# 13 min at load average 10).
#   bash scripts/make_shipped_runs.sh [EXTRA tricl train FLAGS...]
#   ONLY=tri-eigen bash scripts/make_shipped_runs.sh     # one group (or several, space-separated)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=checkpoints
EPOCHS=${EPOCHS:-15}
ONLY=${ONLY:-two-view tri-eigen image-text}
EXTRA=("$@")

train_seeds() { # METHOD DATASET [tricl train flags...]
  local method=$1 dataset=$2
  shift 2
  for seed in 0 1 2; do
    tricl train --method "$method" --dataset "$dataset" --seed "$seed" --epochs "$EPOCHS" \
      --runs-root "$ROOT" --no-progress "$@" ${EXTRA[@]+"${EXTRA[@]}"}
    # a finished run needs no optimizer state: ship weights, config and metrics only
    rm -f "$ROOT/${method}_${dataset}_"*"_seed$seed/train_state.pt"
  done
}

# the analysis artifacts are shipped too, so the dashboard opens without computing
analyze_and_compare() { # METHOD DATASET: both bases of its seeds, and their comparisons
  local runs=("$ROOT/${1}_${2}_"*)
  tricl analyze "${runs[@]}"
  tricl compare "${runs[@]}" # also estimates the spectral bases
  tricl analyze "${runs[@]}" --basis spectral
  tricl compare "${runs[@]}" --basis spectral
}

two_view() {
  train_seeds simclr mnist5k
  train_seeds tricl mnist5k
  analyze_and_compare tricl mnist5k
  analyze_and_compare simclr mnist5k
  tricl compare "$ROOT"/simclr_mnist5k_* "$ROOT"/tricl_mnist5k_* --consensus # ranks of all six
}

tri_eigen() {
  train_seeds tri-eigen mnist5k
  analyze_and_compare tri-eigen mnist5k
}

# image-text runs: image analyses + the text side (zero-shot, captions, factors), then both
# sides' identifiability in the trained axes and in the spectral bases
image_text() {
  for method in clip triclip; do
    train_seeds "$method" mnist5k-captions --text-width 64
  done
  for method in clip triclip; do
    analyze_and_compare "$method" mnist5k-captions
  done
}

for group in $ONLY; do
  case "$group" in
    two-view) two_view ;;
    tri-eigen) tri_eigen ;;
    image-text) image_text ;;
    *)
      echo "error: unknown group '$group' in ONLY; use two-view, tri-eigen or image-text" >&2
      exit 2
      ;;
  esac
done
tricl runs --runs-root "$ROOT"
