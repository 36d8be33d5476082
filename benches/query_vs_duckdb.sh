#!/usr/bin/env bash
# SQL benchmark: 1-minute means over ~100 M values (12.5 M lines x 8 fields), doppel vs DuckDB
# (from PyPI, in its own virtual environment) on the very same Parquet files doppel wrote.
# Usage: bash benches/query_vs_duckdb.sh [batches per client]   (default 625 = 12.5 M lines)
set -euo pipefail
cd "$(dirname "$0")/.."
batches=${1:-625}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doppel/target}"
cargo build --release -p doppel --locked
doppel="$CARGO_TARGET_DIR/release/doppel"

venv="${DOPPEL_BENCH_VENV:-$HOME/.cache/doppel/bench-venv}"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import duckdb' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q duckdb
fi

work=$(mktemp -d "${TMPDIR:-/var/tmp}/doppel-qbench.XXXXXX")
cleanup() { kill "${doppel_pid:-}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
wait_port() { for _ in $(seq 1 200); do (echo > /dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.1; done; exit 1; }

echo "== machine: $(nproc) cores, $(date -u +%FT%TZ); duckdb $("$venv/bin/python" -c 'import duckdb; print(duckdb.__version__)')"
DOPPEL_LOG=warn "$doppel" serve --data "$work/d" --listen 127.0.0.1:17702 --flush-mib 4096 --max-buffer-mib 8192 &
doppel_pid=$!
wait_port 17702
"$doppel" bench ingest --url http://127.0.0.1:17702 --batches "$batches"
kill -TERM "$doppel_pid"; wait "$doppel_pid" || true; doppel_pid=
du -sh "$work/d/bench"

sql="SELECT asset, date_bin(INTERVAL '1 minute', time) AS minute,
  avg(f0), avg(f1), avg(f2), avg(f3), avg(f4), avg(f5), avg(f6), avg(f7)
  FROM plant GROUP BY 1, 2"
for run in 1 2 3; do
  start=$(date +%s.%N)
  rows=$("$doppel" query --data "$work/d" --db bench --format csv "$sql" | wc -l)
  end=$(date +%s.%N)
  echo "doppel run $run: $(echo "$end - $start" | bc) s ($((rows - 1)) groups)"
done
"$venv/bin/python" - "$work/d/bench/plant" <<'PY'
import sys, time, duckdb
path = sys.argv[1] + "/*/*.parquet"
con = duckdb.connect()
sql = f"""SELECT asset, time_bucket(INTERVAL '1 minute', time) AS minute,
  avg(f0), avg(f1), avg(f2), avg(f3), avg(f4), avg(f5), avg(f6), avg(f7)
  FROM read_parquet('{path}', union_by_name = true) GROUP BY 1, 2"""
for run in range(1, 4):
    t = time.time()
    n = len(con.execute(sql).fetchall())
    print(f"duckdb run {run}: {time.time() - t:.3f} s ({n} groups)")
PY
