#!/usr/bin/env bash
# A real full disk under a running doppel: a 64 MiB tmpfs (needs root to mount), filled by a
# spare file and by writes until the WAL meets ENOSPC. Checks what docs/LAKE.md promises:
# writes get 503 with Retry-After (never 400), /health says fail, writes resume by themselves
# once space is freed, and after a restart every acknowledged point is there.
#
# Usage: sudo bash benches/disk_full.sh [path/to/doppel]
set -euo pipefail
DOPPEL="${1:-target/release/doppel}"
MNT="$(mktemp -d)"
mount -t tmpfs -o size=64m tmpfs "$MNT"
cleanup() { kill -9 "${PID:-0}" 2>/dev/null || true; wait 2>/dev/null || true; umount "$MNT" || true; rmdir "$MNT"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL="http://127.0.0.1:$PORT"
start() {
  DOPPEL_LOG=error "$DOPPEL" serve --data "$MNT/data" --listen "127.0.0.1:$PORT" --flush-age 1h &
  PID=$!
  for _ in $(seq 100); do curl -s "$URL/ping" >/dev/null && return; sleep 0.1; done
  echo "doppel did not start" >&2; exit 1
}
start
# Leave about 2 MiB free.
free_mib=$(( $(df --output=avail -k "$MNT" | tail -1) / 1024 ))
dd if=/dev/zero of="$MNT/spare" bs=1M count=$((free_mib - 2)) status=none
acked=0; refused=0; first_refusal=""
for batch in $(seq 1 400); do
  body=$(python3 -c "import sys; b=$batch; print(''.join(f'm,a=x v={b*1000+i} {b*1000+i}\n' for i in range(1000)))")
  code=$(curl -s -o /tmp/disk_full_body -w '%{http_code}' -XPOST "$URL/api/v2/write?bucket=plant&precision=s" --data-binary "$body" -D /tmp/disk_full_headers)
  case "$code" in
    204) acked=$((acked + 1)) ;;
    503) refused=$((refused + 1)); [ -z "$first_refusal" ] && first_refusal="$batch: $(cat /tmp/disk_full_body) | $(grep -i retry-after /tmp/disk_full_headers | tr -d '\r')" ;;
    *) echo "batch $batch: unexpected $code $(cat /tmp/disk_full_body)" >&2; exit 1 ;;
  esac
  [ "$refused" -ge 3 ] && break
done
health=$(curl -s -o /dev/null -w '%{http_code}' "$URL/health")
echo "acknowledged $acked batches, then refused: $first_refusal; /health answered $health"
rm "$MNT/spare"
code=$(curl -s -o /dev/null -w '%{http_code}' -XPOST "$URL/api/v2/write?bucket=plant&precision=s" --data-binary "m,a=x v=-1 1")
echo "after freeing space, a write answered $code (health now $(curl -s -o /dev/null -w '%{http_code}' "$URL/health"))"
[ "$code" = 204 ] && acked_rows=$((acked * 1000 + 1)) || acked_rows=$((acked * 1000))
kill -9 "$PID"; wait "$PID" 2>/dev/null || true
start
rows=$(curl -s "$URL/api/v3/query_sql?db=plant&format=csv&q=SELECT%20count(*)%20AS%20n%20FROM%20m" | tail -1)
echo "after kill -9 and a restart: $rows rows stored, $acked_rows acknowledged"
[ "$rows" -ge "$acked_rows" ] || { echo "LOST acknowledged rows" >&2; exit 1; }
