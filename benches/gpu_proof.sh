#!/usr/bin/env bash
# The sensor model on a GPU through burn's wgpu backend, next to the CPU: the same
# pretraining (same seed, same data) on both, printing each one's tokens/s and validation
# loss. For a machine with a GPU (or, to check the code path only, a software Vulkan such
# as Mesa's lavapipe: `apt-get install mesa-vulkan-drivers`). Never part of CI, which only
# checks that the `gpu` build compiles.
# Usage: bash benches/gpu_proof.sh [STEPS] [SIZE] [CSV]    (defaults: 200 tiny ETTh1)
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${1:-200}
size=${2:-tiny}
data=${3:-../shared/data/ett/ETTh1.csv}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doppel/target}"
cargo build --release -p doppel --features gpu --locked
doppel="$CARGO_TARGET_DIR/release/doppel"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/doppel-gpu.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "== $(date -u +%FT%TZ), $size model, $steps steps, $data"
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
for where in gpu cpu; do
  flag=$([[ $where == gpu ]] && echo --gpu || true)
  echo "-- $where"
  /usr/bin/time -f "wall %e s" "$doppel" model pretrain --input "$data" --size "$size" \
    --steps "$steps" --seed 0 --checkpoint-every 0 $flag --out "$work/$where" 2>&1 |
    grep -E "validation loss|tokens/s|wall|error|Error"
done
