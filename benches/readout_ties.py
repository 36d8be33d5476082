#!/usr/bin/env python3
"""How well each ETT channel is read from the others at the same step, month by month.

Fits each channel on the other six by least squares (ridge 1e-3 of each input's sum of
squares, as `readout::least_squares_start` does) over the training split, standardised by
the training statistics, then prints its MSE in-sample, under a 6-fold blocked
cross-validation of the training split, on validation and on test, and LUFL's and HUFL's
fit month by month: where the ties the channel read-out relies on hold and where they break.
Plain Python (no numpy): a few seconds for the hourly sets, a minute for the 15-minute ones.

Usage: python3 benches/readout_ties.py ../shared/data/ett/ETTh1.csv
"""
import csv
import sys

path = sys.argv[1]
rows = list(csv.reader(open(path)))[1:]
X = [[float(v) for v in r[1:]] for r in rows]
hourly = len(X) < 30000
month = 30 * 24 * (1 if hourly else 4)
tr, va, te = 12 * month, 4 * month, 4 * month
C = 7
names = "HUFL HULL MUFL MULL LUFL LULL OT".split()
mu = [sum(x[c] for x in X[:tr]) / tr for c in range(C)]
sd = [(sum((x[c] - mu[c]) ** 2 for x in X[:tr]) / tr) ** 0.5 for c in range(C)]
Z = [[(x[c] - mu[c]) / sd[c] for c in range(C)] for x in X]


def products(rs):
    return [[sum(Z[t][i] * Z[t][j] for t in rs) for j in range(C)] for i in range(C)]


def solve(a, b):
    n = len(a)
    m = [a[i][:] + [b[i]] for i in range(n)]
    for k in range(n):
        p = max(range(k, n), key=lambda r: abs(m[r][k]))
        m[k], m[p] = m[p], m[k]
        for r in range(n):
            if r != k:
                f = m[r][k] / m[k][k]
                m[r] = [x - f * y for x, y in zip(m[r], m[k])]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit(p, c, ridge=1e-3):
    o = [j for j in range(C) if j != c]
    a = [[p[i][j] + (ridge * p[i][i] if i == j else 0) for j in o] for i in o]
    return o, solve(a, [p[i][c] for i in o])


def mse(rs, c, o, w):
    rs = list(rs)
    return sum((Z[t][c] - sum(wi * Z[t][j] for j, wi in zip(o, w))) ** 2 for t in rs) / len(rs)


train = products(range(tr))
folds = [range(tr * k // 6, tr * (k + 1) // 6) for k in range(6)]
fold_products = [products(f) for f in folds]
print(f"{path}: standardised MSE of each channel read from the other six")
print("channel  in-sample  blocked-CV  validation  test   (validation mean's MSE)")
for c in range(C):
    o, w = fit(train, c)
    cv = 0.0
    for f, pf in zip(folds, fold_products):
        rest = [[train[i][j] - pf[i][j] for j in range(C)] for i in range(C)]
        of, wf = fit(rest, c)
        cv += mse(f, c, of, wf) * len(f) / tr
    mean = sum(Z[t][c] ** 2 for t in range(tr, tr + va)) / va
    print(
        f"{names[c]:7}  {mse(range(tr), c, o, w):9.4f}  {cv:10.4f}  "
        f"{mse(range(tr, tr + va), c, o, w):10.4f}  {mse(range(tr + va, tr + va + te), c, o, w):6.4f}"
        f"   ({mean:.4f})"
    )
print("month by month (30 days), the training fit of LUFL and HUFL:")
lufl, hufl = fit(train, 4), fit(train, 0)
for s in range(0, tr + va + te, month):
    rs = range(s, min(s + month, tr + va + te))
    split = "train" if s < tr else ("valid" if s < tr + va else "test")
    print(f"  {rows[s][0][:10]} {split:5}  LUFL {mse(rs, 4, *lufl):7.3f}  HUFL {mse(rs, 0, *hufl):6.3f}")
