#!/usr/bin/env python3
"""Ingest with a Monte Carlo study running on the same server, against none:

    python3 benches/study_beside_ingest.py DOPPEL [--rounds 5]

`doppel serve --spec` with the reference plant's spec; `doppel bench ingest` (4 clients x 40
batches x 5,000 lines) alternating without and with a scenario study running
(`POST /api/v1/scenario-runs`, heatwave, runs enough to outlast the round; cancelled after
it). Prints the medians of lines/s and each round, and how many of the study's runs finished
during the rounds with ingest beside them (the study's share of the machine).
"""

import argparse
import json
import os
import statistics
import time
import urllib.request

from doppel_process import ingest, start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call(url, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="GET" if body is None else "POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("doppel")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    spec = os.path.join(ROOT, "examples/reference-plant/twin.toml")
    serve, url = start(args.doppel, "serve", ["--spec", spec])
    try:
        without, beside, runs_done, seconds = [], [], 0, 0.0
        for _ in range(args.rounds):
            without.append(ingest(args.doppel, url))
            job = call(url, "/api/v1/scenario-runs",
                       {"scenario": "heatwave", "runs": 10000, "days": 30, "policy": "rules"})
            # The study has started working before the round begins.
            time.sleep(1.0)
            began = time.time()
            before = call(url, f"/api/v1/scenario-runs/{job['id']}")["summary"]["done"]
            beside.append(ingest(args.doppel, url))
            after = call(url, f"/api/v1/scenario-runs/{job['id']}")["summary"]["done"]
            seconds += time.time() - began
            runs_done += after - before
            call(url, f"/api/v1/scenario-runs/{job['id']}/cancel", {})
            time.sleep(1.0)
    finally:
        serve.terminate()
        serve.wait()
    a, b = statistics.median(without), statistics.median(beside)
    print(f"ingest: {a / 1e3:.0f} k lines/s alone, {b / 1e3:.0f} k with a study running "
          f"({100 * (b - a) / a:+.1f} %); rounds alone {[round(x / 1e3) for x in without]}, "
          f"beside {[round(x / 1e3) for x in beside]}; the study ran {runs_done} runs of 30 days "
          f"in the {seconds:.0f} s of ingest beside it ({runs_done / max(seconds, 1e-9):.1f}/s)")


if __name__ == "__main__":
    main()
