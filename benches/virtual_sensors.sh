#!/usr/bin/env bash
# Virtual sensors on ETT: each channel of the test split left out whole, in turn, and rebuilt
# by `doppel model impute` from the others, with models pretrained with and without
# `--channel-mask-share`; next to the channel's training mean and a least-squares fit of the
# channel on the others at the same step (fitted on the training split).
# Usage: bash benches/virtual_sensors.sh [DATA_DIR] [DATASET] [STEPS] [SHARES] [PRETRAIN ARGS...]
#   defaults: ../shared/data/ett ETTm1 1500 "0 0.25"; further arguments go to every pretrain
#   (e.g. --channels-per-token 7 for LSM's 2-D patches); SEED=k in the environment seeds
#   every pretrain with k (default 0)
set -euo pipefail
cd "$(dirname "$0")/.."
data_dir=${1:-../shared/data/ett}
dataset=${2:-ETTm1}
steps=${3:-1500}
shares=${4:-"0 0.25"}
extra=("${@:5}")
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/doppel/target}"
cargo build --release -p doppel --locked
doppel="$CARGO_TARGET_DIR/release/doppel"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/doppel-vs.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "== machine: $(nproc) cores, $(uname -r), $(date -u +%FT%TZ); $dataset, $steps steps, seed ${SEED:-0}, ${extra[*]:-}"

# The standard splits (../shared/data/README.md): train, then 4 months of test after validation.
python3 - "$data_dir/$dataset.csv" "$work" <<'EOF'
import csv, sys
src, work = sys.argv[1], sys.argv[2]
rows = list(csv.reader(open(src)))
head, body = rows[0], rows[1:]
hourly = len(body) < 30000
month = 30 * 24 * (1 if hourly else 4)
train, test = body[: 12 * month], body[16 * month : 20 * month]
def write(path, part, blank=None):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(head)
        for r in part:
            w.writerow([("" if i == blank else v) for i, v in enumerate(r)])
write(f"{work}/train.csv", train)
write(f"{work}/test.csv", test)
for c in range(1, len(head)):
    write(f"{work}/test-without-{head[c]}.csv", test, blank=c)
EOF

for share in $shares; do
  "$doppel" model pretrain --input "$work/train.csv" --time-column date --size tiny \
    --steps "$steps" --seed "${SEED:-0}" --channel-mask-share "$share" --checkpoint-every 0 \
    "${extra[@]}" --out "$work/model-$share" 2>&1 | tail -1
  for f in "$work"/test-without-*.csv; do
    name=$(basename "$f" .csv)
    "$doppel" model impute --model "$work/model-$share" --input "$f" \
      --out "$work/filled-$share-${name#test-without-}.csv" 2>/dev/null
  done
done

python3 - "$work" $shares <<'EOF'
import csv, sys
work, shares = sys.argv[1], sys.argv[2:]
def load(path):
    rows = list(csv.reader(open(path)))
    return rows[0], [[float(v) for v in r[1:]] for r in rows[1:]]
head, train = load(f"{work}/train.csv")
_, test = load(f"{work}/test.csv")
names = head[1:]
k = len(names)
mean = [sum(r[c] for r in train) / len(train) for c in range(k)]
std = [(sum((r[c] - mean[c]) ** 2 for r in train) / len(train)) ** 0.5 for c in range(k)]

def solve(a, b):
    # Gaussian elimination with partial pivoting: the normal equations are small (k × k).
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for i in range(n):
        p = max(range(i, n), key=lambda r: abs(m[r][i]))
        m[i], m[p] = m[p], m[i]
        for r in range(n):
            if r != i:
                f = m[r][i] / m[i][i]
                m[r] = [x - f * y for x, y in zip(m[r], m[i])]
    return [m[i][n] / m[i][i] for i in range(n)]

def regression(c):
    # The channel on the others (standardised) plus a constant, fitted on the training split.
    others = [j for j in range(k) if j != c]
    feats = lambda r: [(r[j] - mean[j]) / std[j] for j in others] + [1.0]
    xtx = [[0.0] * k for _ in range(k)]
    xty = [0.0] * k
    for r in train:
        x, y = feats(r), (r[c] - mean[c]) / std[c]
        for i in range(k):
            xty[i] += x[i] * y
            for j in range(k):
                xtx[i][j] += x[i] * x[j]
    w = solve(xtx, xty)
    return lambda r: sum(a * b for a, b in zip(w, feats(r)))

def mse(pred, c):
    return sum((p - (r[c] - mean[c]) / std[c]) ** 2 for p, r in zip(pred, test)) / len(test)

cols = ["training mean", "least squares on the others"] + [f"model, channel masks {s}" for s in shares]
print("| channel | " + " | ".join(cols) + " |")
print("|---" * (len(cols) + 1) + "|")
totals = [0.0] * len(cols)
for c, name in enumerate(names):
    fitted = regression(c)
    row = [mse([0.0] * len(test), c), mse([fitted(r) for r in test], c)]
    for s in shares:
        _, filled = load(f"{work}/filled-{s}-{name}.csv")
        row.append(mse([(r[c] - mean[c]) / std[c] for r in filled], c))
    totals = [t + v for t, v in zip(totals, row)]
    print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in row) + " |")
print("| mean | " + " | ".join(f"**{t / k:.3f}**" for t in totals) + " |")
EOF
