#!/usr/bin/env python3
"""Ingest while the twin trains its own model, against a twin without one:

    python3 benches/ingest_while_training.py DOPPEL [--rounds 3] [--model-steps 3000]

1. `doppel up --catch-up 0 --model-steps N` on a fresh data folder: once
   `GET /api/v1/models` says `training`, `doppel bench ingest` (4 clients x 40 batches x
   5,000 lines, into its own bucket) `--rounds` times, each round counted only if the model
   was still training when it ended;
2. `doppel up --catch-up 0 --no-model`: the same rounds.

Prints the medians of lines/s and each round.
"""

import argparse
import json
import statistics
import sys
import time
import urllib.request

from doppel_process import ingest, start


def status(url):
    with urllib.request.urlopen(url + "/api/v1/models", timeout=10) as r:
        return json.loads(r.read())["status"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("doppel")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model-steps", type=int, default=3000)
    args = parser.parse_args()

    proc, url = start(args.doppel, "up", ["--catch-up", "0", "--model-steps", str(args.model_steps)],
                      within=60)
    training = []
    try:
        deadline = time.time() + 600
        while status(url)["state"] != "training":
            if time.time() > deadline:
                sys.exit("the model never started training")
            time.sleep(1)
        for _ in range(args.rounds):
            lines = ingest(args.doppel, url)
            now = status(url)
            if now["state"] != "training":
                print(f"the model finished ({now['state']}) during a round: not counted",
                      file=sys.stderr)
                break
            training.append(lines)
            print(f"  training (step {now['step']}/{now['steps']}): {lines / 1e3:.0f} k lines/s",
                  file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait()

    proc, url = start(args.doppel, "up", ["--catch-up", "0", "--no-model"], within=60)
    without = []
    try:
        time.sleep(20)
        for _ in range(args.rounds):
            without.append(ingest(args.doppel, url))
    finally:
        proc.terminate()
        proc.wait()
    if not training:
        sys.exit("no round ended while the model was training: raise --model-steps")
    a, b = statistics.median(without), statistics.median(training)
    print(f"ingest: {a / 1e3:.0f} k lines/s without a model, {b / 1e3:.0f} k while it trains "
          f"({100 * (b - a) / a:+.1f} %); rounds without {[round(x / 1e3) for x in without]}, "
          f"training {[round(x / 1e3) for x in training]}")


if __name__ == "__main__":
    main()
