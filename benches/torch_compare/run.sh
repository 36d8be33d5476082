#!/usr/bin/env bash
# Training speed of the tiny sensor model: doppel (burn, flex CPU backend) next to the same
# model in PyTorch on the CPU, same shapes, same threads. PyTorch goes into its own virtual
# environment (PyPI's default wheel brings CUDA libraries, about 5 GB): never part of CI.
# Usage: bash benches/torch_compare/run.sh [steps] [size]     (defaults: 200 tiny)
set -euo pipefail
cd "$(dirname "$0")/../.."
steps=${1:-200}
size=${2:-tiny}
data=${ETT_CSV:-../shared/data/ett/ETTh1.csv}
threads=$(nproc)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doppel/target}"
cargo build --release -p doppel --locked
doppel="$CARGO_TARGET_DIR/release/doppel"

venv="${DOPPEL_TORCH_VENV:-$HOME/.cache/doppel/torch-venv}"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import torch, numpy' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch numpy
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/doppel-torch.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "== machine: $threads cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(date -u +%FT%TZ)"
echo "== $size model, batch 32, windows of 96 steps (12 patches of 8), 80 % masked, $steps steps"
"$doppel" model pretrain --input "$data" --size "$size" --steps "$steps" --batch 32 \
  --patch 8 --patches 12 --out "$work/m" 2>&1 | grep -E "parameters|tokens/s"
"$venv/bin/python" benches/torch_compare/mae.py --data "$data" --size "$size" \
  --steps "$steps" --batch 32 --threads "$threads"
