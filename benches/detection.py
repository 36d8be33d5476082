#!/usr/bin/env python3
"""Detection of simulated disruptions by the reference plant's alert rules.

For every scenario in scenarios/ and every seed, simulates the plant with the scenario
(`doppel sim run`), backtests the rules on the run (`doppel rules test --json`), and scores
the alerts against the drawn events (`run.events.json`): a disruption is detected when an
alert on one of the assets it hits (any asset for plant-wide kinds) starts between its start
and its end (or the run's end). The same seeds without any scenario give the false alerts a
simulated week.

    python3 benches/detection.py DOPPEL [--seeds 20] [--days 30] [--rules FILE]
        [--model DIR --anomaly "0.999 for 30m"] [--only sensor_faults.toml ...]
        [--policy none]

With `--model` (a twin's model, such as `doppel model twin` makes from a baseline run of a
seed not scored here) the backtests read its anomaly scores, and `--anomaly` adds a rule
`anomaly(ASSET) > ...` for every asset of the reference plant to the rules.

For bearing wear, the lead time too: how long before the worn pump's trip (its first status
reading of 2, failed, after the wear began) the warning on it began, counting the alerts on
the pump still open at the trip. Under the default operator a worn pump is
usually serviced before it trips; `--policy none` leaves the plant to itself, so the wear runs
to its trip.

For spoofs of the supply temperature, whether the fake hid a real excursion (the true supply,
from the run's labels, above 9 °C) and when the first alert on the loop came: minutes after
the true supply first passed 9 °C, and whether before the harm (the true supply above 9 °C
for 5 minutes, when "supply too warm" would have fired on honest readings).

Prints a table per kind of disruption (sensor faults and spoofs per mode): runs where it
happened, share detected, median and worst time to detect, and in how many runs each rule
alerted during it; then the baseline's alerts a week, per rule.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections import defaultdict
from datetime import datetime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLANT_WIDE = {"heat_wave", "load_surge", "price_spike", "parts_delay"}


def when(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def asset_of(target):
    """pump1_vibration -> pump1; chw_supply_temp -> chw; pump2 -> pump2."""
    return target.split("_")[0].split(".")[0]


ASSETS = ["pump1", "pump2", "pump3", "pump4", "chiller1", "chiller2", "chiller3", "chw",
          "tower", "hall", "plant"]


def duration(seconds):
    """12 min, 5.3 h, 4.1 days."""
    if seconds < 120 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def trips(path):
    """Each asset's status readings of 2 (failed), as times: asset -> [t, ...]."""
    with open(path) as f:
        header = next(f).rstrip("\n").split(",")
        columns = [(i, name[: -len("_status")]) for i, name in enumerate(header)
                   if name.endswith("_status")]
        found = defaultdict(list)
        for line in f:
            cells = line.rstrip("\n").split(",")
            for i, asset in columns:
                if cells[i] == "2.0" or cells[i] == "2":
                    found[asset].append(when(cells[0]))
    return found


def hidden_excursion(labels, start, stop, limit=9.0, hold=300):
    """The first time the true supply passed `limit` within [start, stop], and the time it had
    stayed above for `hold` seconds (the harm), from the run's labels; None if it never did."""
    with open(labels) as f:
        header = next(f).rstrip("\n").split(",")
        column = header.index("true_chw_supply_temp")
        above = None
        for line in f:
            cells = line.rstrip("\n").split(",")
            t = when(cells[0])
            if t < start:
                continue
            if t > stop:
                break
            if float(cells[column]) > limit:
                above = above or t
                if t - above >= hold:
                    return above, t
            else:
                above = None
    return None


def run(doppel, rules, scenario, seed, days, folder, model=None, policy="rules"):
    out = os.path.join(folder, f"run{seed}.csv")
    command = [doppel, "sim", "run", "--days", str(days), "--seed", str(seed), "--out", out,
               "--policy", policy]
    if scenario:
        command += ["--scenario", scenario]
    subprocess.run(command, check=True, capture_output=True)
    alerts = subprocess.run(
        [doppel, "rules", "test", rules, "--input", out, "--json"]
        + (["--model", model] if model else []),
        check=True, capture_output=True, text=True,
    ).stdout
    alerts = [json.loads(line) for line in alerts.splitlines() if line.strip()]
    events_path = out[: -len(".csv")] + ".events.json"
    events = json.load(open(events_path)) if os.path.exists(events_path) else []
    first = last = None
    with open(out) as f:
        next(f)
        for line in f:
            t = line.split(",", 1)[0]
            first = first or t
            last = t
    return alerts, events, when(first), when(last), trips(out), out[: -len(".csv")] + ".labels.csv"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("doppel")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--days", type=float, default=30)
    parser.add_argument("--rules", default=os.path.join(ROOT, "examples/reference-plant/rules.toml"))
    parser.add_argument("--model")
    parser.add_argument("--anomaly", help='such as "0.999 for 30m"')
    parser.add_argument("--policy", default="rules", help="who operates the simulated plant")
    parser.add_argument("--only", nargs="*", help="scenario files of scenarios/ to run, such as sensor_faults.toml (default: all)")
    args = parser.parse_args()
    if args.anomaly:
        text = open(args.rules).read()
        for asset in ASSETS:
            text += f'\n[[rule]]\nname = "{asset} unusual"\nwhen = "anomaly({asset}) > {args.anomaly}"\n'
        combined = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
        combined.write(text)
        combined.close()
        args.rules = combined.name
    scenarios = sorted(
        os.path.join(ROOT, "scenarios", f)
        for f in os.listdir(os.path.join(ROOT, "scenarios"))
        if f.endswith(".toml") and (not args.only or f in args.only)
    )
    kinds = defaultdict(lambda: {"runs": 0, "detected": 0, "delays": [], "by": defaultdict(int)})
    # Bearing wear: hours from the first alert on the pump to its trip, per run that tripped.
    leads = []
    untripped = 0
    # Spoofs of the supply that hid an excursion: (minutes from the true crossing to the
    # first alert on the loop or None, whether before the harm).
    hidden = []
    with tempfile.TemporaryDirectory() as folder:
        for scenario in scenarios:
            for seed in range(1, args.seeds + 1):
                alerts, events, _, end, tripped, labels = run(
                    args.doppel, args.rules, scenario, seed, args.days, folder, args.model,
                    args.policy,
                )
                for event in events:
                    kind = event["kind"]
                    # Sensor faults and spoofs by mode: stuck, drift, bias, replay, fake...
                    mode = next(iter(event.get("effect", {}).values()), {})
                    if isinstance(mode, dict) and mode.get("mode"):
                        kind = f"{kind} ({mode['mode']})"
                    start = when(event["start"])
                    stop = when(event["end"]) if event.get("end") else end
                    assets = {asset_of(t) for t in event.get("targets", [])}
                    hits = [
                        (when(a["start"]) - start, a["rule"])
                        for a in alerts
                        if start <= when(a["start"]) <= stop + 600
                        and (event["kind"] in PLANT_WIDE or not assets or a["asset"] in assets)
                    ]
                    kinds[kind]["runs"] += 1
                    if event["kind"] == "bearing_wear":
                        trip = next((t for a in assets for t in tripped.get(a, []) if t >= start),
                                    None)
                        if trip is None:
                            untripped += 1
                        else:
                            # Alerts on the pump still open at its trip (or resolved within
                            # ten minutes of it): the warning that stood until the trip.
                            flagged = [when(a["start"]) for a in alerts
                                       if a["asset"] in assets and when(a["start"]) <= trip
                                       and (not a.get("end") or when(a["end"]) >= trip - 600)]
                            leads.append((trip - min(flagged)) / 3600 if flagged else 0.0)
                    if event["kind"] == "spoof" and "chw_supply_temp" in event.get("targets", []):
                        excursion = hidden_excursion(labels, start, stop)
                        if excursion:
                            crossed, harm = excursion
                            seen = [when(a["start"]) for a in alerts
                                    if a["asset"] == "chw" and when(a["start"]) >= start]
                            first_seen = min(seen) if seen else None
                            hidden.append((
                                (first_seen - crossed) / 60 if first_seen else None,
                                first_seen is not None and first_seen <= harm,
                            ))
                    if hits:
                        delay, rule = min(hits)
                        kinds[kind]["detected"] += 1
                        kinds[kind]["delays"].append(delay)
                        for rule in {rule for _, rule in hits}:
                            kinds[kind]["by"][rule] += 1
            print(f"{os.path.basename(scenario)} done", file=sys.stderr)
        false = defaultdict(int)
        weeks = 0.0
        for seed in range(1, args.seeds + 1):
            alerts, _, first, last, _, _ = run(
                args.doppel, args.rules, None, seed, args.days, folder, args.model, args.policy
            )
            weeks += (last - first) / (7 * 86400)
            for a in alerts:
                false[a["rule"]] += 1
    print(f"| disruption | runs where it happened | detected | median time to detect | worst |")
    print("|---|---|---|---|---|")
    for kind, k in sorted(kinds.items()):
        delays = k["delays"]
        median = duration(statistics.median(delays)) if delays else "—"
        worst = duration(max(delays)) if delays else "—"
        share = k["detected"] / k["runs"] if k["runs"] else 0
        print(f"| {kind} | {k['runs']} | {k['detected']} ({share:.0%}) | {median} | {worst} |")
    print("\nruns each rule alerted in during the disruption (on the assets it hits):")
    for kind, k in sorted(kinds.items()):
        if k["by"]:
            rules = ", ".join(f"{rule} {n}" for rule, n in sorted(k["by"].items(), key=lambda x: -x[1]))
            print(f"  {kind}: {rules}")
    if leads or untripped:
        early = sum(1 for h in leads if h >= 24)
        print(f"\nbearing wear: {len(leads)} worn pump(s) tripped, {untripped} did not; "
              f"flagged 24 h or more before the trip: {early} of {len(leads)}; lead hours "
              f"{', '.join(f'{h:.0f}' for h in sorted(leads))}")
    if hidden:
        before = sum(1 for _, early in hidden if early)
        minutes = sorted(m for m, _ in hidden if m is not None)
        print(f"\nspoofed supply over a real excursion: {len(hidden)} run(s); alerted on the "
              f"loop before the harm (5 min above 9 °C, true) in {before}; minutes from the "
              f"true crossing to the first alert: {', '.join(f'{m:.0f}' for m in minutes)}")
    total = sum(false.values())
    print(f"\nbaseline ({args.seeds} runs of {args.days:g} days): {total} alert(s), "
          f"{total / weeks:.2f} a simulated week")
    for rule, n in sorted(false.items(), key=lambda x: -x[1]):
        print(f"  {rule}: {n}")


if __name__ == "__main__":
    main()
