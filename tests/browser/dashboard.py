#!/usr/bin/env python3
"""The dashboard in a real browser: Debian's Chromium, driven by Playwright (no browser
download). Run by the e2e test `dashboard::the_dashboard_works_in_a_real_browser` with the
project's virtual environment (scripts/browser-deps.sh makes it):

    .venv/bin/python tests/browser/dashboard.py DOPPEL SCREENSHOTS_DIR

Starts `doppel up` (the reference plant, a pump trip injected) and `doppel serve` with a
token, and checks: each view loads with no console error and no failed request; the overview
lists the plant's assets; a chart gains a reading written through the API within 2 s; a
scenario study run from the planning page shows its distributions; MPC's proposals show
with their simulated effect and one approved from the page is executed by the plant; the
trip shows as an alert that can be acknowledged, and the acknowledgement is still there after
a reload, with the trip and the pump's repair (maintenance) on the server's timeline; the token gate shows nothing without the token. Saves a screenshot of each view at
1280x800 and 390x844. Exits non-zero, saying what failed, on the first failure.
"""

import os
import sys
import tempfile
import time
import urllib.request

from playwright.sync_api import sync_playwright

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "benches"))
from doppel_process import start  # noqa: E402

CHROMIUM = os.environ.get("DOPPEL_CHROMIUM", "/usr/bin/chromium")


def check(condition, message):
    if not condition:
        raise SystemExit("FAILED: " + message)


def watched(page, problems):
    page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: "/api/v1/events" not in r.url
            and problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and r.status != 401
            and problems.append(f"HTTP {r.status}: {r.url}"))
    return page


def main():
    doppel, shots = sys.argv[1], sys.argv[2]
    os.makedirs(shots, exist_ok=True)
    scenario = os.path.join(tempfile.mkdtemp(), "trip.toml")
    with open(scenario, "w") as f:
        f.write('name = "trip"\ndescription = "pump 2 trips"\n\n[[disruption]]\n'
                'kind = "pump_trip"\nstart = "5s"\nasset = "pump2"\n')
    # MPC at work in approve mode: a decision a minute, 8 °C the other setpoint it may choose.
    up, url = start(doppel, "up", ["--speed", "3600x", "--backfill", "10m", "--scenario", scenario,
                                   "--policy", "mpc:period=1m,horizon=1h,setpoints=8",
                                   "--mode", "approve"])
    token = "s3cret-token"
    spec = os.path.join(ROOT, "examples/reference-plant/twin.toml")
    gated, gated_url = start(doppel, "serve", ["--spec", spec, "--token", token])
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            for name, viewport in [("desktop", {"width": 1280, "height": 800}),
                                   ("phone", {"width": 390, "height": 844})]:
                problems = []
                page = watched(browser.new_page(viewport=viewport), problems)
                # Operations: the plant's twelve assets, each with its state.
                page.goto(url + "/")
                page.wait_for_function("document.querySelectorAll('.asset').length === 12", timeout=10000)
                check(page.locator('[data-asset="pump3"]').count() == 1, "pump3 is listed")
                page.wait_for_selector("#alerts .alert, #alerts p", timeout=10000)
                page.screenshot(path=os.path.join(shots, f"operations-{name}.png"), full_page=True)
                # An asset: a reading written now reaches its chart within 2 s.
                page.goto(url + "/#/asset/chw")
                page.wait_for_selector('[data-chart="chw_supply_temp"] canvas', timeout=10000)
                page.wait_for_selector("#live.on", timeout=10000)
                before = page.evaluate("doppel.charts['chw_supply_temp'].data[0].length")
                now = int(time.time())
                body = f"chw_loop,asset=chw supply_temp=7.77 {now}".encode()
                written = time.time()
                urllib.request.urlopen(urllib.request.Request(
                    url + "/api/v2/write?bucket=plant&precision=s", data=body, method="POST"))
                page.wait_for_function(
                    f"doppel.charts['chw_supply_temp'].data[0].length > {before}", timeout=2000)
                took = time.time() - written
                check(took < 2.0, f"the chart gained the reading in {took:.2f} s")
                page.screenshot(path=os.path.join(shots, f"asset-{name}.png"), full_page=True)
                # Planning: a draft checked, a small study run from the page to its results.
                page.goto(url + "/#/planning")
                page.wait_for_selector("#study-form textarea", timeout=10000)
                page.select_option('#study-form select[name="scenario"]', "pump_trip")
                page.click("#check")
                page.wait_for_selector("#draft:has-text('ok:')", timeout=5000)
                page.fill('#study-form input[name="runs"]', "8")
                page.fill('#study-form input[name="days"]', "3")
                page.click("#study-form button:not([type])")
                page.wait_for_selector("#results [data-result] table", timeout=60000)
                check(page.locator("#results tr").count() > 3, "the study's KPIs are shown")
                page.screenshot(path=os.path.join(shots, f"planning-{name}.png"), full_page=True)
                # Risk: the study's grid over failures and windows, and each asset's odds.
                page.goto(url + "/#/risk")
                page.wait_for_selector('[data-risk="scenario_probability"] td', timeout=10000)
                check(page.locator("[data-risk-asset]").count() == 12, "every asset in the risk table")
                check(page.locator("[data-health]").count() == 7,
                      "the estimator's health of the four pumps and three chillers")
                check(page.locator("[data-risk-tile]").count() == 12, "every asset on the risk map")
                page.screenshot(path=os.path.join(shots, f"risk-{name}.png"), full_page=True)
                # Models: forecast bands written for minutes the plant has readings of are set
                # against them (the model itself needs hours of history to train).
                minute = int(time.time()) // 60 * 60
                bands = "".join(f"doppel_forecast,sensor=chw_supply_temp,horizon=30m p10=0,p50=7,p90=20 {minute - 60 * k}\n"
                                for k in range(3, 8))
                urllib.request.urlopen(urllib.request.Request(
                    url + "/api/v2/write?bucket=plant&precision=s", data=bands.encode(), method="POST"))
                page.goto(url + "/#/models")
                page.wait_for_selector("section h2", timeout=10000)
                page.wait_for_selector('[data-live-coverage="chw_supply_temp"]', timeout=10000)
                page.wait_for_selector('[data-coverage="chw_supply_temp@30m"] canvas', timeout=10000)
                page.screenshot(path=os.path.join(shots, f"models-{name}.png"), full_page=True)
                # Autonomy: the policy's proposals with their simulated effect.
                page.goto(url + "/#/autonomy")
                page.wait_for_selector("#proposals .proposal", timeout=120000)
                check("total cost" in page.locator("#proposals .proposal").first.inner_text(),
                      "a proposal shows its effect")
                page.screenshot(path=os.path.join(shots, f"autonomy-{name}.png"), full_page=True)
                check(not problems, f"{name}: " + "; ".join(problems))
                page.close()

            # A pending proposal approved from the page: approved, then executed by the plant.
            problems = []
            page = watched(browser.new_page(viewport={"width": 1280, "height": 800}), problems)
            page.goto(url + "/#/autonomy")
            pending = page.locator(".proposal.pending").first
            pending.wait_for(timeout=120000)
            ident = pending.get_attribute("data-proposal")
            pending.locator("input").fill("cheaper")
            pending.locator("button[value=approve]").click()
            page.wait_for_selector(f'[data-proposal="{ident}"].executed >> text=by operator: cheaper',
                                   timeout=30000)
            check(not problems, "autonomy: " + "; ".join(problems))
            page.close()

            # The injected trip: an alert on pump2, acknowledged with a note, kept on reload.
            problems = []
            page = watched(browser.new_page(viewport={"width": 1280, "height": 800}), problems)
            page.goto(url + "/")
            trip = page.locator(".alert", has_text="pump2 tripped").first
            trip.wait_for(timeout=150000)
            form = trip.locator("form")
            form.locator("input").fill("crew sent")
            form.locator("button").click()
            page.wait_for_selector('.alert:has-text("pump2 tripped") >> text=crew sent', timeout=5000)
            page.reload()
            page.wait_for_selector('.alert:has-text("pump2 tripped") >> text=crew sent', timeout=10000)
            # The timeline after the reload, as the server keeps it: the trip injected, then
            # pump2 taken in for repair (in maintenance, on its card too).
            page.wait_for_selector('#timeline [data-kind="disruption"]:has-text("pump_trip:pump2")',
                                   timeout=10000)
            page.wait_for_selector('#timeline [data-kind="maintenance"]:has-text("pump2 went into maintenance")',
                                   timeout=90000)
            page.wait_for_selector('[data-asset="pump2"].maintenance', timeout=10000)
            page.screenshot(path=os.path.join(shots, "timeline-desktop.png"), full_page=True)
            check(not problems, "alerts: " + "; ".join(problems))
            page.close()

            # The token gate: nothing shown without it, the plant once it is given.
            problems = []
            page = watched(browser.new_page(viewport={"width": 1280, "height": 800}), problems)
            page.goto(gated_url + "/")
            page.wait_for_selector("#token-dialog[open]", timeout=10000)
            check(page.locator(".asset").count() == 0, "no asset shown without the token")
            page.screenshot(path=os.path.join(shots, "token-desktop.png"))
            check(not problems, "token gate, before the token: " + "; ".join(problems))
            page.fill("#token-input", "wrong")
            page.click("#token-form button")
            page.wait_for_selector("#token-dialog[open]", timeout=10000)
            check(page.locator(".asset").count() == 0, "no asset shown with a wrong token")
            # The wrong token's 401 is the gate at work, not a fault.
            problems[:] = [p for p in problems if "status of 401" not in p]
            page.fill("#token-input", token)
            page.click("#token-form button")
            page.wait_for_function("document.querySelectorAll('.asset').length === 12", timeout=10000)
            page.wait_for_selector("#live.on", timeout=10000)
            check(not problems, "token gate: " + "; ".join(problems))
            browser.close()
    finally:
        for proc in (up, gated):
            proc.terminate()
            proc.wait()
    print("dashboard: every check passed")


if __name__ == "__main__":
    main()
