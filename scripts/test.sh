#!/usr/bin/env bash
# The whole test suite, as CI runs it: builds once, runs every crate's tests, prints times.
# Needs a Rust toolchain (cargo) and python3; installs Chromium and Playwright for the browser
# test (scripts/browser-deps.sh); reuses a build cache outside the clone when there is one.
set -euo pipefail
cd "$(dirname "$0")/.."

# A shared target folder outside the clone lets later clones on this machine reuse the build.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doppel/target}"
mkdir -p "$CARGO_TARGET_DIR"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

if ! command -v cargo >/dev/null; then
  echo "cargo is not installed: install Rust (https://rustup.rs) and run this again" >&2
  exit 1
fi

# The dashboard's browser test needs Chromium and Playwright (installed once, idempotently).
bash scripts/browser-deps.sh

start=$(date +%s)
cargo build --workspace --tests --locked
built=$(date +%s)
echo "build: $((built - start)) s (target: $CARGO_TARGET_DIR)"

cargo test --workspace --locked
tested=$(date +%s)
echo "tests: $((tested - built)) s"

# The GPU build (burn's wgpu backend) must keep compiling; running it needs a GPU machine.
cargo check -p doppel --features gpu --locked
done_at=$(date +%s)
echo "gpu build check: $((done_at - tested)) s; total: $((done_at - start)) s"
