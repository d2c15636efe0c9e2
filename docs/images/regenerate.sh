#!/usr/bin/env bash
# Regenerates the images of docs/comparing.md: two sweeps on synthetic benchmarks, then
# `reweight compare --plot`. Runs in a temporary directory (its own mlflow.db); a few minutes
# on a CPU.   Usage, from the repository root:  bash docs/images/regenerate.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/docs/images/comparing"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"

reweight run "$root/benchmarks/synthetic_sweep.yaml"
reweight compare synthetic_sweep --metric test_accuracy,weight_noise_auc --plot "$out"

reweight run "$root/benchmarks/groups_annotators.yaml" --set seeds=3 --set "sweep.strategy.name=[soseleto, uniform]"
reweight compare groups_annotators --metric test_accuracy,weight_harmful_auc --plot plots
cp plots/slots.png "$out/slots.png"
