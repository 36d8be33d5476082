#!/usr/bin/env bash
# Side-by-side ingest benchmark: doppel and InfluxDB 1.x (Debian's `influxdb`) on loopback,
# the same plant payload (200 assets x 8 float fields a line, 5,000 lines a batch,
# 4 concurrent clients), both with their data in temporary folders on the same disk.
# Usage: bash benches/ingest_vs_influxdb.sh [batches per client]
set -euo pipefail
cd "$(dirname "$0")/.."
batches=${1:-40}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doppel/target}"
cargo build --release -p doppel --locked
doppel="$CARGO_TARGET_DIR/release/doppel"

if ! command -v influxd >/dev/null; then
  echo "installing Debian's influxdb (needs root and the Debian archive)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq influxdb >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/doppel-bench.XXXXXX")
cleanup() { kill "${doppel_pid:-}" "${influx_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }

echo "== machine: $(nproc) cores, $(uname -r), $(date -u +%FT%TZ)"
"$doppel" bench parse --lines 1000000
"$doppel" bench wal --dir "$work" --writers 4 --batches 20

# Each server starts with no unrelated dirty data on the disk: on ext4 a WAL fsync can wait
# for the journal to write out whatever else is dirty (a fresh build's hundreds of MB, say).
sync

# doppel
DOPPEL_LOG=warn "$doppel" serve --data "$work/doppel" --listen 127.0.0.1:17700 &
doppel_pid=$!
wait_port 17700
"$doppel" bench ingest --url http://127.0.0.1:17700 --label doppel --batches "$batches"
kill -TERM "$doppel_pid"; wait "$doppel_pid" || true; doppel_pid=

# InfluxDB 1.x, WAL fsync on every write (its default: wal-fsync-delay = 0s)
cat > "$work/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:18088"
[meta]
  dir = "$work/influx/meta"
[data]
  dir = "$work/influx/data"
  wal-dir = "$work/influx/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"
[http]
  bind-address = "127.0.0.1:18086"
  log-enabled = false
  max-body-size = 0
[monitor]
  store-enabled = false
CONF
sync
influxd -config "$work/influxdb.conf" >"$work/influxd.log" 2>&1 &
influx_pid=$!
wait_port 18086
curl -s -XPOST 'http://127.0.0.1:18086/query' --data-urlencode 'q=CREATE DATABASE bench' >/dev/null
"$doppel" bench ingest --url http://127.0.0.1:18086 --label influxdb-1.6 --batches "$batches"
