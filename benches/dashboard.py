#!/usr/bin/env python3
"""The dashboard's figures, in the test browser (Debian's Chromium through Playwright;
scripts/browser-deps.sh installs both):

    .venv/bin/python benches/dashboard.py DOPPEL [--rounds 3]

1. First load on loopback: from navigation to the overview showing the plant's twelve
   assets (median of the rounds), and every byte the page transfers (its files and its
   first API answers), as sent (the server does not compress).
2. A chart of 8 series x 7 days of 1-minute data (80,640 points) drawn with the page's
   chart library, timed until the second animation frame after it was made (so it
   includes the paint and up to two frames of waiting): median of the rounds.
3. Ingest with the dashboard open and streaming, against none: `doppel bench ingest` into
   a `doppel serve --spec` with the twin, alternating without and with a page on the
   operations view (its event stream open), `--rounds` times each; medians of lines/s.
"""

import argparse
import os
import statistics
import time

from playwright.sync_api import sync_playwright

from doppel_process import ingest, start

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM = os.environ.get("DOPPEL_CHROMIUM", "/usr/bin/chromium")


CHART = """async () => {
  const n = 7 * 1440, series = 8;
  const t = Array.from({length: n}, (_, i) => 1700000000 + 60 * i);
  const data = [t];
  for (let s = 0; s < series; s++) data.push(t.map((_, i) => Math.sin(i / 200 + s) * 10 + s));
  const div = document.createElement('div'); document.body.appendChild(div);
  const began = performance.now();
  const plot = new uPlot({width: 1200, height: 400,
    series: [{}, ...Array.from({length: series}, (_, s) => ({label: 's' + s, stroke: 'hsl(' + 45 * s + ',70%,45%)'}))]},
    data, div);
  // Until the frame after next: whatever uPlot defers to a frame is drawn by then.
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const took = performance.now() - began;
  plot.destroy(); div.remove();
  return took;
}"""


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("doppel")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    up, url = start(args.doppel, "up", ["--speed", "3600x", "--backfill", "1h", "--no-model"])
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            loads, sizes, charts = [], [], []
            for _ in range(args.rounds):
                page = browser.new_page(viewport={"width": 1280, "height": 800})
                began = time.time()
                page.goto(url + "/")
                page.wait_for_function("document.querySelectorAll('.asset').length === 12")
                loads.append(time.time() - began)
                sizes.append(page.evaluate(
                    "performance.getEntriesByType('navigation')[0].transferSize + "
                    "performance.getEntriesByType('resource').reduce((s, r) => s + r.transferSize, 0)"))
                charts.append(page.evaluate(CHART))
                page.close()
            print(f"first load: {1000 * statistics.median(loads):.0f} ms to the twelve assets "
                  f"(rounds {', '.join(f'{1000 * x:.0f}' for x in loads)}); "
                  f"{statistics.median(sizes) / 1024:.0f} kB transferred")
            print(f"8 series x 7 days of 1-minute data: drawn in {statistics.median(charts):.0f} ms "
                  f"(rounds {', '.join(f'{x:.0f}' for x in charts)})")
            browser.close()
    finally:
        up.terminate()
        up.wait()

    spec = os.path.join(ROOT, "examples/reference-plant/twin.toml")
    serve, url = start(args.doppel, "serve", ["--spec", spec])
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            without, with_page = [], []
            for _ in range(args.rounds):
                without.append(ingest(args.doppel, url))
                page = browser.new_page()
                page.goto(url + "/")
                page.wait_for_selector("#live.on")
                with_page.append(ingest(args.doppel, url))
                page.close()
            browser.close()
    finally:
        serve.terminate()
        serve.wait()
    a, b = statistics.median(without), statistics.median(with_page)
    print(f"ingest: {a / 1e3:.0f} k lines/s without the dashboard, {b / 1e3:.0f} k with it open "
          f"({100 * (b - a) / a:+.1f} %); rounds without {[round(x / 1e3) for x in without]}, "
          f"with {[round(x / 1e3) for x in with_page]}")


if __name__ == "__main__":
    main()
