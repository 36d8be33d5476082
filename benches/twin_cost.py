#!/usr/bin/env python3
"""The cost of watching: how soon `doppel up` has its own model at work, and what the live
twin costs in CPU once it has.

    python3 benches/twin_cost.py DOPPEL [--seconds 120]

Three runs of `doppel up` on fresh data folders, each on a free port:

1. defaults: the wall-clock seconds from start until `GET /api/v1/models` says `live`
   (the day of history, the model pretrained on it, its detector chosen);
2. `--catch-up 0` (live at real time at once): once the model is live, the process's CPU
   time over `--seconds` of steady state, as a share of one core;
3. the same with `--no-model`: the twin without its model, for the difference.

CPU time is read from /proc/PID/stat (user + system), so the figure covers everything the
process does: the reference plant's simulation, ingest, the lake's flushes, rules, PCA and
the model's scoring.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

from doppel_process import start


def get(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.loads(r.read())


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def start_up(doppel, extra):
    """`doppel up EXTRA...` on a fresh data folder; (process, port)."""
    proc, url = start(doppel, "up", extra, within=60)
    return proc, int(url.rsplit(":", 1)[1])


def wait_live(port, within):
    began = time.time()
    while time.time() - began < within:
        status = get(port, "/api/v1/models")["status"]
        if status["state"] == "live":
            return time.time() - began, status
        if status["state"] == "failed":
            sys.exit(f"the model failed: {status['message']}")
        time.sleep(1)
    sys.exit(f"no model at work within {within} s")


def steady_cpu(proc, seconds):
    before, t0 = cpu_seconds(proc.pid), time.time()
    time.sleep(seconds)
    return (cpu_seconds(proc.pid) - before) / (time.time() - t0)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("doppel")
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()

    began = time.time()
    proc, port = start_up(args.doppel, [])
    took, status = wait_live(port, 1800)
    since_start = time.time() - began
    proc.terminate()
    proc.wait()
    print(f"defaults: model live {since_start:.0f} s after `doppel up` "
          f"({status['steps']} steps; detector {status['detector']})")

    proc, port = start_up(args.doppel, ["--catch-up", "0"])
    wait_live(port, 1800)
    time.sleep(10)
    with_model = steady_cpu(proc, args.seconds)
    proc.terminate()
    proc.wait()

    proc, port = start_up(args.doppel, ["--catch-up", "0", "--no-model"])
    time.sleep(30)
    without = steady_cpu(proc, args.seconds)
    proc.terminate()
    proc.wait()
    print(f"steady state over {args.seconds:.0f} s: {100 * with_model:.1f} % of one core with "
          f"the model at work, {100 * without:.1f} % without it")


if __name__ == "__main__":
    main()
