#!/usr/bin/env python3
"""Ingest to alert: the time from a write's 204 to its alert on the event stream.

Starts `doppel serve` with the example spec and one rule on a pump's vibration, listens to
`/api/v1/events`, keeps a background load of line protocol going (other series, batches of
5,000 lines, at `--rate` lines a second), and, `--alerts` times, writes a vibration that trips
the rule (and one that clears it), timing each from the 204 to the `alert` event.

    python3 benches/ingest_to_alert.py DOPPEL [--rate 100000] [--alerts 50]

Prints p50 / p99 / max of the latencies, and the load the server took meanwhile. The rule is
judged on the lake's write path before the write is acknowledged, so the event is usually on
the stream by the time the 204 arrives (a latency of 0).
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from doppel_process import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def post(port, body):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    c.request("POST", "/api/v2/write?bucket=plant&precision=s", body=body)
    r = c.getresponse()
    r.read()
    c.close()
    return r.status


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("doppel")
    parser.add_argument("--rate", type=int, default=100_000)
    parser.add_argument("--alerts", type=int, default=50)
    args = parser.parse_args()
    folder = tempfile.mkdtemp()
    rules = os.path.join(folder, "rules.toml")
    with open(rules, "w") as f:
        f.write('[[rule]]\nname = "shaking"\nwhen = "\\"pump-1.vibration\\" > 7.1"\n')
    port = free_port()
    server = subprocess.Popen(
        [args.doppel, "serve", "--data", os.path.join(folder, "data"), "--listen", f"127.0.0.1:{port}",
         "--spec", os.path.join(ROOT, "examples/cooling-plant/twin.toml"), "--rules", rules],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        try:
            http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/ping")
            break
        except OSError:
            time.sleep(0.1)
    events = {}
    ready = threading.Event()

    def listen():
        c = http.client.HTTPConnection("127.0.0.1", port)
        c.request("GET", "/api/v1/events")
        r = c.getresponse()
        ready.set()
        kind = None
        while True:
            line = r.fp.readline()
            if not line:
                return
            line = line.decode().strip()
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind == "alert":
                alert = json.loads(line[6:])["alert"]
                events.setdefault((alert["id"], alert["state"]), time.monotonic())

    threading.Thread(target=listen, daemon=True).start()
    ready.wait(10)
    stop = threading.Event()
    sent = [0]
    base = int(time.time()) - 3600
    bodies = [
        "\n".join(f"load,asset=a{i % 200} f0={i * 0.5},f1={j} {base + j}" for i in range(5000))
        for j in range(8)
    ]

    def load():
        k = 0
        mine = 0
        began = time.monotonic()
        while not stop.is_set():
            post(port, bodies[k % len(bodies)])
            k += 1
            mine += 5000
            sent[0] += 5000
            # Two loaders: each keeps half the rate.
            ahead = mine / (args.rate / 2) - (time.monotonic() - began)
            if ahead > 0:
                time.sleep(ahead)

    loaders = [threading.Thread(target=load, daemon=True) for _ in range(2)]
    for t in loaders:
        t.start()
    began = time.monotonic()
    latencies = []
    t = int(time.time()) - 600
    for n in range(args.alerts):
        for value, state in ((9.0, "firing"), (2.0, "resolved")):
            t += 1
            assert post(port, f"pumps,asset=pump-1 vibration_rms={value} {t}") == 204
            acknowledged = time.monotonic()
            deadline = acknowledged + 10
            while time.monotonic() < deadline:
                hit = [at for (i, s), at in events.items() if s == state and at >= acknowledged - 1 and (i, s) not in [x[0] for x in latencies]]
                if hit:
                    latencies.append(((next(i for (i, s), at in events.items() if at == hit[0]), state), hit[0] - acknowledged))
                    break
                time.sleep(0.001)
    elapsed = time.monotonic() - began
    stop.set()
    server.terminate()
    server.wait(30)
    values = sorted(max(0.0, l) * 1000 for _, l in latencies)
    if not values:
        print("no alert arrived")
        sys.exit(1)
    p99 = values[min(len(values) - 1, int(round(0.99 * (len(values) - 1))))]
    print(f"{len(values)} alert changes of {2 * args.alerts}: 204 → event p50 {statistics.median(values):.1f} ms, "
          f"p99 {p99:.1f} ms, max {values[-1]:.1f} ms; background load {sent[0] / elapsed:,.0f} lines/s "
          f"(asked {args.rate:,})")


if __name__ == "__main__":
    main()
