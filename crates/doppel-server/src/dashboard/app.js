// doppel's dashboard: one page over the public API (/api/v1 and SQL), live from the event
// stream. No framework, no build step: views render into #main from the hash route
// (#/, #/asset/ID, #/planning, #/risk, #/models, #/autonomy). Charts are uPlot (vendored, MIT).
"use strict";

const state = window.doppel = { token: sessionStorage.getItem("doppel-token") || "", charts: {}, asset: null, timeline: [] };
const $ = (sel, root = document) => root.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (v, d = 2) => (v === null || v === undefined || Number.isNaN(v) ? "—" : Number(v).toFixed(d));

// --- the API, with the token when the server asks for one ---
let askingForToken = null;
function askForToken(message) {
  if (!askingForToken) {
    askingForToken = new Promise((resolve) => {
      const dialog = $("#token-dialog");
      $("#token-error").textContent = message || "";
      $("#token-form").onsubmit = () => {
        state.token = $("#token-input").value.trim();
        sessionStorage.setItem("doppel-token", state.token);
        askingForToken = null;
        connect();
        resolve();
      };
      $("#main").innerHTML = "";
      dialog.showModal();
    });
  }
  return askingForToken;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (state.token) headers["Authorization"] = "Bearer " + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    await askForToken(state.token ? "That token is not valid." : "");
    return api(path, options);
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error((body && body.message) || response.status + " " + response.statusText);
  return body;
}

// --- the event stream ---
let events = null;
function connect() {
  if (events) events.close();
  const query = state.token ? "?p=" + encodeURIComponent(state.token) : "";
  events = new EventSource("/api/v1/events" + query);
  events.onopen = () => { $("#live").textContent = "live"; $("#live").classList.add("on"); };
  events.onerror = () => { $("#live").textContent = "offline"; $("#live").classList.remove("on"); };
  events.addEventListener("readings", (e) => onReadings(JSON.parse(e.data).values));
  events.addEventListener("state", (e) => {
    const { asset, state: s } = JSON.parse(e.data);
    const card = $(`[data-asset="${CSS.escape(asset)}"]`);
    if (card) { card.className = "asset " + s; $(".state", card).textContent = s; $(".state", card).className = "state " + s; }
    addToTimeline({ time: Date.now(), kind: s === "maintenance" ? "maintenance" : "state", text: s === "maintenance" ? `${asset} went into maintenance` : `${asset} is ${s}` });
  });
  events.addEventListener("scenario_run", (e) => onStudy(JSON.parse(e.data)));
  events.addEventListener("disruption", (e) => {
    const d = JSON.parse(e.data);
    addToTimeline({ time: Date.now(), kind: "disruption", text: `disruption injected: ${d.label}${d.targets.length ? " (" + d.targets.join(", ") + ")" : ""}` });
  });
  events.addEventListener("proposal", (e) => {
    const { proposal: p } = JSON.parse(e.data);
    if (p.state !== "recorded") addToTimeline({ time: Date.now(), kind: "proposal", text: `proposal ${p.state}: ${p.summary.join(", ")} (${p.policy})` });
    if (route().view === "autonomy") renderProposals();
  });
  events.addEventListener("alert", (e) => {
    const { alert } = JSON.parse(e.data);
    addToTimeline({ time: Date.now(), kind: "alert", text: `alert ${alert.state}: ${alert.rule} (${alert.asset})` });
    if (route().view === "operations") renderAlerts();
  });
}

function onReadings(values) {
  for (const [sensor, [t, v]] of Object.entries(values)) {
    const chart = state.charts[sensor];
    if (chart) {
      chart.data[0].push(t / 1000);
      chart.data[1].push(v);
      for (let i = 2; i < chart.data.length; i++) chart.data[i].push(null);
      chart.plot.setData(chart.data);
    }
    const cell = $(`[data-sensor="${CSS.escape(sensor)}"]`);
    if (cell) cell.textContent = fmt(v);
  }
}

// The timeline: the server's (kept in the lake, so it survives reloads), then what the event
// stream brings while the page is open.
function addToTimeline(entry) {
  state.timeline.unshift(entry);
  state.timeline.length = Math.min(state.timeline.length, 200);
  const box = $("#timeline");
  if (box) box.innerHTML = timelineRows();
}
const timelineRows = () => state.timeline.map((e) => `<div class="tl-${esc(e.kind)}" data-kind="${esc(e.kind)}">${new Date(e.time).toLocaleString()} <span class="kind">${esc(e.kind)}</span> ${esc(e.text)}</div>`).join("") || '<div class="muted">nothing yet</div>';
async function loadTimeline() {
  const entries = await api("/api/v1/timeline?hours=168&limit=200");
  state.timeline = entries.map((e) => ({ time: Date.parse(e.time), kind: e.kind, text: e.text }));
  const box = $("#timeline");
  if (box) box.innerHTML = timelineRows();
}

// --- views ---
function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  if (hash.startsWith("asset/")) return { view: "asset", id: decodeURIComponent(hash.slice(6)) };
  if (hash === "models") return { view: "models" };
  if (hash === "planning") return { view: "planning" };
  if (hash === "risk") return { view: "risk" };
  if (hash === "autonomy") return { view: "autonomy" };
  return { view: "operations" };
}

async function render() {
  const r = route();
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.view === r.view || (r.view === "asset" && a.dataset.view === "operations")));
  state.charts = {};
  try {
    if (r.view === "asset") await renderAsset(r.id);
    else if (r.view === "models") await renderModels();
    else if (r.view === "planning") await renderPlanning();
    else if (r.view === "risk") await renderRisk();
    else if (r.view === "autonomy") await renderAutonomy();
    else await renderOperations();
  } catch (e) {
    $("#main").innerHTML = `<section class="wide"><p class="error">${esc(e.message)}</p></section>`;
  }
}

async function renderOperations() {
  const twin = await api("/api/v1/twin");
  state.bucket = twin.bucket;
  const sites = twin.sites.map((site) => `
    <h2>${esc(site.name || site.id)}</h2>
    <div class="assets">${site.assets.map((a) => `
      <a class="asset ${esc(a.state)}" data-asset="${esc(a.id)}" href="#/asset/${encodeURIComponent(a.id)}">
        <div class="id">${esc(a.id)}</div>
        <div class="state ${esc(a.state)}">${esc(a.state)}</div>
        <div class="meta">${esc(a.kind)} · anomaly ${fmt(a.anomaly)}${a.open_alerts ? " · " + a.open_alerts + " open" : ""}</div>
      </a>`).join("")}</div>`).join("");
  $("#main").innerHTML = `
    <section id="plant"><h2>${esc(twin.name)}</h2>${sites}</section>
    <section><h2>Alerts</h2><div id="alerts" class="muted">loading…</div></section>
    <section class="wide"><h2>Timeline</h2><div id="timeline" class="timeline">${timelineRows()}</div></section>`;
  await Promise.all([renderAlerts(), loadTimeline()]);
}

async function renderAlerts() {
  const box = $("#alerts");
  if (!box) return;
  const alerts = await api("/api/v1/alerts");
  const open = alerts.filter((a) => a.state !== "resolved");
  const recent = alerts.filter((a) => a.state === "resolved").slice(-5).reverse();
  const row = (a) => `
    <div class="alert ${esc(a.severity)}" data-alert="${esc(a.id)}">
      <div><span class="rule">${esc(a.rule)}</span> · ${esc(a.asset)} · <span class="muted">${esc(a.state)} since ${esc(a.started)}</span></div>
      ${a.acknowledged_by ? `<div class="muted">acknowledged by ${esc(a.acknowledged_by)}${a.note ? ": " + esc(a.note) : ""}</div>` : ""}
      ${a.state === "firing" ? `<form data-ack="${esc(a.id)}"><input name="note" placeholder="note"><button>Acknowledge</button></form>` : ""}
    </div>`;
  box.classList.remove("muted");
  box.innerHTML = (open.map(row).join("") || '<p class="muted">no open alerts</p>') +
    (recent.length ? `<p class="muted">resolved lately</p>${recent.map(row).join("")}` : "");
  box.querySelectorAll("form[data-ack]").forEach((form) => form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const by = localStorage.getItem("doppel-operator") || "operator";
    await api(`/api/v1/alerts/${encodeURIComponent(form.dataset.ack)}/ack`, {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ by, note: form.note.value }),
    });
    await renderAlerts();
  }));
}

async function renderAsset(id) {
  const view = await api(`/api/v1/assets/${encodeURIComponent(id)}?window=6h&points=720`);
  const model = view.anomaly_model;
  const driving = new Set((model && model.score > 0.9 ? model.sensors.slice(0, 2) : []).map(([s]) => s));
  const forecasts = Object.fromEntries((view.forecasts || []).map((f) => [f.sensor, f]));
  $("#main").innerHTML = `
    <section class="wide">
      <h2><a href="#/">plant</a> / ${esc(view.id)} <span class="state ${esc(view.state)}">${esc(view.state)}</span></h2>
      <p class="muted">anomaly ${fmt(view.anomaly)} (${esc(view.anomaly_detector)})${model ? ` · the model's sensors driving it: ${model.sensors.slice(0, 3).map(([s, share]) => `${esc(s)} ${fmt(100 * share, 0)} %`).join(", ")}` : ""}</p>
      <table><tr><th>sensor</th><th>value</th><th>unit</th><th>quality</th></tr>
      ${view.sensors.map((s) => `<tr><td>${esc(s.id)}</td><td data-sensor="${esc(s.id)}">${fmt(s.value)}</td><td>${esc(s.unit)}</td><td>${esc(s.quality)}</td></tr>`).join("")}</table>
    </section>
    <section class="wide"><h2>Last 6 hours</h2><div class="charts" id="charts"></div></section>
    <section class="wide"><h2>Anomaly score</h2><div id="anomaly-chart" class="chart"></div></section>`;
  const width = (div) => Math.max(240, div.clientWidth - 4);
  for (const series of view.readings.series) {
    const div = document.createElement("div");
    div.className = "chart" + (driving.has(series.sensor) ? " driving" : "");
    div.dataset.chart = series.sensor;
    const forecast = forecasts[series.sensor];
    div.innerHTML = `<h3>${esc(series.sensor)}${forecast ? ` · ${forecast.horizon_minutes} min ahead: ${fmt(forecast.p10)}–${fmt(forecast.p90)}` : ""}</h3>`;
    $("#charts").appendChild(div);
    const data = [series.t.map((t) => t / 1000), series.v.slice(), series.t.map(() => null), series.t.map(() => null)];
    if (forecast) {
      data[0].push(Date.parse(forecast.time) / 1000);
      data[1].push(null); data[2].push(forecast.p10); data[3].push(forecast.p90);
    }
    const plot = new uPlot({
      width: width(div), height: 160,
      series: [{}, { label: series.sensor, stroke: "#2f6feb", spanGaps: true },
        { label: "p10", stroke: "#b7791f", dash: [4, 4], points: { show: true } },
        { label: "p90", stroke: "#b7791f", dash: [4, 4], points: { show: true } }],
      legend: { show: false },
    }, data, div);
    state.charts[series.sensor] = { plot, data };
  }
  const history = view.anomaly_history[view.anomaly_detector === "pca" ? "pca" : "model"] || view.anomaly_history.pca || { t: [], v: [] };
  new uPlot({
    width: width($("#anomaly-chart")), height: 120,
    series: [{}, { label: "anomaly", stroke: "#c0362c" }],
    scales: { x: { min: Date.parse(view.readings.from) / 1000, max: Date.parse(view.readings.to) / 1000 }, y: { range: [0, 1] } }, legend: { show: false },
  }, [history.t.map((t) => t / 1000), history.v], $("#anomaly-chart"));
}

async function renderModels() {
  const models = await api("/api/v1/models");
  const s = models.status;
  $("#main").innerHTML = `
    <section class="wide"><h2>${esc(s.name)}: ${esc(s.state)}</h2>
      <p>${esc(s.message)}</p>
      ${s.state === "training" ? `<progress max="${s.steps}" value="${s.step}"></progress>` : ""}
      <table><tr><th>version</th><th>at work</th><th>trained on</th><th>validation loss</th><th>detector</th><th>promotion</th></tr>
      ${models.versions.map((v) => `<tr><td>v${v.version}</td><td>${v.live ? "yes" : ""}</td>
        <td>${esc(v.trained_on.map((d) => `${d.start} to ${d.end}`).join(", "))}</td>
        <td>${fmt(v.validation_loss, 4)}</td>
        <td>${v.detector ? esc(v.detector.why) : ""}</td>
        <td>${v.promotion ? `${v.promotion.promoted ? "replaced" : "lost to"} v${v.promotion.against}: ${fmt(v.promotion.candidate_error, 4)} vs ${fmt(v.promotion.live_error, 4)}` : ""}</td></tr>`).join("")}
      </table></section>
    <section class="wide"><h2>Forecast bands: coverage</h2>
      <p class="muted">The share of readings inside the p10–p90 band (meant: ${fmt(100 * models.coverage_target, 0)} %): on the plant over the last day of data, each band set against the minute it forecast, and on held-out history when the version was made.</p>
      <div id="coverage">${coverageTable(models)}</div><div class="charts" id="coverage-charts"></div></section>
    <section class="wide"><h2>Training curves</h2><div class="charts" id="curves"></div></section>`;
  for (const c of models.coverage || []) {
    const div = document.createElement("div");
    div.className = "chart"; div.dataset.coverage = `${c.sensor}@${c.horizon}`;
    div.innerHTML = `<h3>${esc(c.sensor)}, ${esc(c.horizon)} ahead: ${fmt(100 * c.inside, 0)} % inside of ${c.due} (below ${fmt(100 * c.below, 0)} %, above ${fmt(100 * c.above, 0)} %)</h3>`;
    $("#coverage-charts").appendChild(div);
    const t = c.hourly.map((h) => h[0] / 1000);
    const last = t.length ? t[t.length - 1] : Date.now() / 1000;
    new uPlot({
      width: Math.max(240, div.clientWidth - 4), height: 160,
      scales: { x: { range: () => [last - 23 * 3600, last + 3600] }, y: { range: [0, 1] } },
      series: [{}, { label: "inside", stroke: "#2f6feb", points: { show: true } }, { label: "meant", stroke: "#667085", dash: [4, 4] }],
      legend: { show: false },
    }, [t, c.hourly.map((h) => h[1]), t.map(() => models.coverage_target)], div);
  }
  for (const v of models.versions) {
    const div = document.createElement("div");
    div.className = "chart"; div.dataset.curve = v.version;
    const head = v.forecast_head ? ` · forecast head (${v.forecast_head.horizon} min): validation MSE ${fmt(v.forecast_head.validation_mse, 3)}, its linear start ${fmt(v.forecast_head.linear_validation_mse, 3)}` : "";
    div.innerHTML = `<h3>v${v.version}: training (blue) and validation (red) loss${head}</h3>`;
    $("#curves").appendChild(div);
    new uPlot({
      width: Math.max(240, div.clientWidth - 4), height: 180, scales: { x: { time: false } },
      series: [{ label: "step" }, { label: "train", stroke: "#2f6feb" }, { label: "validation", stroke: "#c0362c", spanGaps: true }],
      legend: { show: false },
    }, [v.curve.map((p) => p[0]), v.curve.map((p) => p[1]), v.curve.map((p) => p[2])], div);
  }
}

// Live coverage per sensor and horizon, then each version's validation coverage per band scale.
function coverageTable(models) {
  const live = (models.coverage || []).map((c) => `<tr data-live-coverage="${esc(c.sensor)}"><td>live</td><td>${esc(c.sensor)} · ${esc(c.horizon)}</td>
    <td style="${heat(Math.abs(c.inside - models.coverage_target) * 2)}">${fmt(100 * c.inside, 0)} %</td><td>${fmt(100 * c.below, 0)} % / ${fmt(100 * c.above, 0)} %</td><td>${c.due} bands due</td></tr>`);
  const held = models.versions.flatMap((v) => ((v.forecast_head && v.forecast_head.band_scores) || []).map((b) => `<tr><td>v${v.version} validation</td><td>${esc(b.bands)} bands, ${v.forecast_head.horizon} min</td>
    <td style="${heat(Math.abs(b.coverage - models.coverage_target) * 2)}">${fmt(100 * b.coverage, 0)} %</td><td>${fmt(100 * b.below, 0)} % / ${fmt(100 * b.above, 0)} %</td><td>width ${fmt(b.width)}, interval score ${fmt(b.interval_score)}</td></tr>`));
  const rows = live.concat(held);
  return rows.length ? `<table><tr><th>where</th><th>bands</th><th>inside</th><th>below / above</th><th></th></tr>${rows.join("")}</table>`
    : '<p class="muted">no forecast bands yet: the model makes them once it is at work and a rule reads a forecast</p>';
}

// --- planning: scenario studies as server-side jobs ---
async function renderPlanning() {
  const [library, runs] = await Promise.all([api("/api/v1/scenarios"), api("/api/v1/scenario-runs")]);
  state.library = library;
  $("#main").innerHTML = `
    <section><h2>Run a scenario</h2>
      <form id="study-form">
        <p><select name="scenario">${library.map((s) => `<option value="${esc(s.name)}">${esc(s.name)}: ${esc(s.title)}</option>`).join("")}</select></p>
        <p><textarea name="text" rows="10" style="width:100%" spellcheck="false"></textarea></p>
        <p id="draft" class="muted"></p>
        <p>runs <input name="runs" type="number" value="100" min="1" max="10000" style="width:6em">
           days <input name="days" type="number" value="30" min="1" max="366" style="width:5em">
           policy <input name="policy" value="rules" list="policies" style="width:9em" title="a policy by name, as doppel policy eval takes it">
           <datalist id="policies"><option>rules</option><option>none</option><option>mpc</option><option>mpc+shield</option><option>maintenance</option><option>maintenance+shield</option><option>rules+shield</option></datalist>
           <button type="button" id="check">Check</button> <button>Run</button></p>
      </form>
      <progress id="study-progress" max="1" value="0" hidden></progress> <span id="study-state" class="muted"></span>
    </section>
    <section><h2>Studies</h2><div id="studies">${studyList(runs)}</div>
      <p class="muted">Pick two to compare them side by side.</p></section>
    <section class="wide"><h2>Results</h2><div id="results" class="results"><p class="muted">run or pick a study</p></div></section>`;
  const form = $("#study-form");
  const fill = () => { form.text.value = (library.find((s) => s.name === form.scenario.value) || {}).text || ""; $("#draft").textContent = ""; };
  form.scenario.onchange = fill; fill();
  $("#check").onclick = async () => {
    try {
      const ok = await api("/api/v1/scenarios/check", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text: form.text.value }) });
      $("#draft").className = "muted"; $("#draft").textContent = "ok: " + ok.disruptions.join("; ");
    } catch (e) { $("#draft").className = "error"; $("#draft").textContent = e.message; }
  };
  form.onsubmit = async (e) => {
    e.preventDefault();
    const library_text = (library.find((s) => s.name === form.scenario.value) || {}).text;
    const body = { runs: Number(form.runs.value), days: Number(form.days.value), policy: form.policy.value.trim() };
    if (form.text.value === library_text) body.scenario = form.scenario.value; else body.text = form.text.value;
    try {
      const started = await api("/api/v1/scenario-runs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
      state.study = started.id;
      onStudy({ id: started.id, state: "running", done: 0, runs: started.runs });
      poll(started.id);
    } catch (err) { $("#draft").className = "error"; $("#draft").textContent = err.message; }
  };
  bindStudies();
}

const studyList = (runs) => runs.map((r) => `<div><label><input type="checkbox" data-study="${esc(r.id)}" ${r.state !== "done" ? "disabled" : ""}>
  ${esc(r.scenario)} · ${r.runs} runs × ${r.days} d · ${esc(r.policy)} · <span class="muted">${esc(r.state)}${r.state === "running" ? ` ${r.done}/${r.runs}` : ""}</span></label></div>`).join("") || '<p class="muted">none yet</p>';

function bindStudies() {
  document.querySelectorAll("[data-study]").forEach((box) => box.onchange = showChosen);
}

async function showChosen() {
  const chosen = [...document.querySelectorAll("[data-study]:checked")].map((b) => b.dataset.study).slice(-2);
  const results = await Promise.all(chosen.map((id) => api(`/api/v1/scenario-runs/${encodeURIComponent(id)}`)));
  $("#results").innerHTML = results.map(resultTable).join("") || '<p class="muted">run or pick a study</p>';
}

function onStudy(run) {
  if (run.id !== state.study || route().view !== "planning") return;
  const bar = $("#study-progress");
  bar.hidden = false; bar.max = run.runs; bar.value = run.done;
  $("#study-state").textContent = `${run.state} ${run.done}/${run.runs}`;
}

async function poll(id) {
  // The event stream carries progress; this catches the end even without it.
  for (;;) {
    const run = await api(`/api/v1/scenario-runs/${encodeURIComponent(id)}`);
    onStudy(run.summary);
    if (run.summary.state !== "running") {
      if (route().view !== "planning") return;
      $("#studies").innerHTML = studyList(await api("/api/v1/scenario-runs"));
      bindStudies();
      if (run.result) $("#results").innerHTML = resultTable(run);
      else $("#results").innerHTML = `<p class="error">${esc(run.summary.error || run.summary.state)}</p>`;
      return;
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

// A KPI's p5–p95 range as a bar, its p50 as a tick, baseline above scenario, on one scale.
function resultTable(run) {
  const r = run.result;
  const rows = Object.keys(r.scenario).map((kpi) => {
    const b = r.baseline[kpi], s = r.scenario[kpi];
    const lo = Math.min(b.p5, s.p5), hi = Math.max(b.p95, s.p95), span = hi - lo || 1;
    const bar = (x, color) => `<div style="position:relative;height:8px;margin:2px 0;background:#eef">
      <div style="position:absolute;left:${(100 * (x.p5 - lo)) / span}%;width:${Math.max(1, (100 * (x.p95 - x.p5)) / span)}%;height:8px;background:${color};opacity:.5"></div>
      <div style="position:absolute;left:${(100 * (x.p50 - lo)) / span}%;width:2px;height:8px;background:${color}"></div></div>`;
    return `<tr><td>${esc(kpi)}</td><td>${fmt(b.p50, 1)}</td><td>${fmt(s.p50, 1)}</td><td style="width:40%">${bar(b, "#667085")}${bar(s, "#c0362c")}</td></tr>`;
  }).join("");
  return `<div class="chart" data-result="${esc(run.summary.id)}"><h3>${esc(r.scenario_name)} · ${r.runs} runs × ${r.days} d · ${esc(r.policy)}</h3>
    <table><tr><th>KPI</th><th>baseline p50</th><th>scenario p50</th><th>p5–p95 (grey: baseline)</th></tr>${rows}</table>
    <p class="muted">P(at least ${r.cluster.at_least} failures at ${r.cluster.assets}+ assets within ${r.cluster.within_hours} h): baseline ${fmt(r.cluster.baseline_probability, 3)}, scenario ${fmt(r.cluster.scenario_probability, 3)}</p></div>`;
}

// --- risk: the odds of clustered failures from a study, and each asset's risk now ---
async function renderRisk() {
  const [runs, twin] = await Promise.all([api("/api/v1/scenario-runs"), api("/api/v1/twin")]);
  // Health needs the state estimator, which knows the reference plant only: without it the
  // map goes on with anomaly and the study's odds.
  const estimate = await api("/api/v1/twin/estimate").catch(() => null);
  const done = runs.filter((r) => r.state === "done");
  $("#main").innerHTML = `
    <section class="wide"><h2>Risk</h2>
      ${done.length ? `<p>study <select id="risk-study">${done.map((r) => `<option value="${esc(r.id)}">${esc(r.scenario)} · ${r.runs} runs × ${r.days} d · ${esc(r.policy)}</option>`).join("")}</select></p>`
        : '<p class="muted">no study yet: run one under <a href="#/planning">Planning</a></p>'}
      <div id="risk-grid" class="results"></div></section>
    <section class="wide"><h2>Assets</h2>
      <p class="muted">Each asset's risk is the worst of: its wear or fouling (1 − health, from the state estimator), the odds it trips within ${estimate ? estimate.health_horizon_hours / 24 : 30} days running at today's wear, its anomaly score now, and the odds it fails in a run of the chosen study.</p>
      <div id="risk-map" class="assets"></div><div id="risk-assets"></div></section>`;
  const assets = twin.sites.flatMap((s) => s.assets);
  const health = Object.fromEntries(((estimate && estimate.health) || []).map((h) => [h.asset, h]));
  const show = async () => {
    const id = $("#risk-study") && $("#risk-study").value;
    const run = id ? await api(`/api/v1/scenario-runs/${encodeURIComponent(id)}`) : null;
    if (run) $("#risk-grid").innerHTML = riskGrid(run.result, "scenario_probability", "with the scenario") + riskGrid(run.result, "baseline_probability", "baseline");
    const odds = (run && run.result.asset_failures) || {};
    const rows = assets.map((a) => {
      const h = health[a.id], o = odds[a.id];
      const parts = [h && 1 - h.health, h && h.trip_odds, a.anomaly, o && o.scenario].filter((x) => typeof x === "number" && !Number.isNaN(x));
      return { a, h, o, risk: parts.length ? Math.max(...parts) : null };
    }).sort((x, y) => (y.risk ?? -1) - (x.risk ?? -1));
    const pct = (p) => `<td style="${heat(p)}">${fmt(100 * p, 0)} %</td>`;
    $("#risk-map").innerHTML = rows.map(({ a, risk }) => `<a class="asset ${esc(a.state)}" data-risk-tile="${esc(a.id)}" href="#/asset/${encodeURIComponent(a.id)}" style="${risk === null ? "" : heat(risk)}">
      <div class="id">${esc(a.id)}</div><div>${risk === null ? "—" : fmt(100 * risk, 0) + " %"}</div></a>`).join("");
    $("#risk-assets").innerHTML = `<table><tr><th>asset</th><th>state</th><th>health</th><th>trips in ${estimate ? estimate.health_horizon_hours / 24 : 30} d</th><th>anomaly now</th><th>fails in a run (scenario)</th><th>(baseline)</th><th>risk</th></tr>
      ${rows.map(({ a, h, o, risk }) => `<tr data-risk-asset="${esc(a.id)}"><td><a href="#/asset/${encodeURIComponent(a.id)}">${esc(a.id)}</a></td>
        <td><span class="state ${esc(a.state)}">${esc(a.state)}</span></td>
        ${h ? `<td data-health="${esc(a.id)}" style="${heat(1 - h.health)}">${fmt(100 * h.health, 0)} %</td>${pct(h.trip_odds)}` : "<td>—</td><td>—</td>"}
        <td>${fmt(a.anomaly)}</td>
        ${o ? `${pct(o.scenario)}${pct(o.baseline)}` : "<td>—</td><td>—</td>"}
        ${risk === null ? "<td>—</td>" : pct(risk)}</tr>`).join("")}</table>`;
  };
  if ($("#risk-study")) $("#risk-study").onchange = show;
  await show();
}

const heat = (p) => `background: rgba(192, 54, 44, ${Math.min(0.85, p)}); color: ${p > 0.5 ? "#fff" : "inherit"}`;

// P(at least X failures at Y+ assets within T): X down, T across.
function riskGrid(result, key, title) {
  const xs = [...new Set(result.risk.map((r) => r.at_least))];
  const ts = [...new Set(result.risk.map((r) => r.within_hours))];
  const cell = (x, t) => result.risk.find((r) => r.at_least === x && r.within_hours === t);
  return `<div class="chart" data-risk="${esc(key)}"><h3>${esc(title)}: P(at least X failures at Y or more assets within T)</h3>
    <table><tr><th>X (Y)</th>${ts.map((t) => `<th>${t / 24} d</th>`).join("")}</tr>
    ${xs.map((x) => `<tr><td>${x} (${cell(x, ts[0]).assets})</td>${ts.map((t) => { const p = cell(x, t)[key]; return `<td style="${heat(p)}">${fmt(p, 2)}</td>`; }).join("")}</tr>`).join("")}</table></div>`;
}

// --- autonomy: a live policy's proposals, with their simulated effect ---
async function renderAutonomy() {
  $("#main").innerHTML = `
    <section class="wide"><h2>Proposals</h2>
      <p class="muted">A policy at work on the live plant (<code>doppel up --policy mpc --mode approve</code>) proposes here; its effect is the change over the next hours against doing nothing, from a small Monte Carlo on the estimated plant (mean, and p5 to p95).</p>
      <div id="proposals" class="muted">loading…</div></section>`;
  await renderProposals();
}

async function renderProposals() {
  const box = $("#proposals");
  if (!box) return;
  const list = await api("/api/v1/proposals");
  const band = (s) => s ? `${fmt(s.mean)} <span class="muted">[${fmt(s.p5)}, ${fmt(s.p95)}]</span>` : "–";
  const effect = (e) => e ? `<div class="muted">over ${e.hours} h: total cost ${band(e.total_cost)} · energy ${band(e.energy_cost)} · minutes above the limit ${band(e.limit_excursion_minutes)}</div>` : "";
  box.classList.remove("muted");
  box.innerHTML = list.slice(0, 50).map((p) => `
    <div class="proposal ${esc(p.state)}" data-proposal="${esc(p.id)}">
      <div><b>${esc(p.summary.join(", "))}</b> · ${esc(p.policy)} (${esc(p.mode)}) · <span class="state">${esc(p.state)}</span> · <span class="muted">${esc(p.time)}</span></div>
      ${effect(p.effect)}
      ${p.decided_by ? `<div class="muted">${esc(p.state)} by ${esc(p.decided_by)}${p.note ? ": " + esc(p.note) : ""}</div>` : ""}
      ${p.state === "pending" ? `<form data-decide="${esc(p.id)}"><input name="note" placeholder="note"><button value="approve">Approve</button><button value="reject">Reject</button></form>` : ""}
    </div>`).join("") || '<p class="muted">no proposals: no policy is at work on the live plant</p>';
  box.querySelectorAll("form[data-decide]").forEach((form) => form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const verb = e.submitter && e.submitter.value === "reject" ? "reject" : "approve";
    const by = localStorage.getItem("doppel-operator") || "operator";
    try {
      await api(`/api/v1/proposals/${encodeURIComponent(form.dataset.decide)}/${verb}`, {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ by, note: form.note.value }),
      });
    } catch (err) {
      form.insertAdjacentHTML("beforeend", `<span class="error">${esc(err.message)}</span>`);
      return;
    }
    await renderProposals();
  }));
}

window.addEventListener("hashchange", render);
(async () => {
  // Ask for the token first when the server needs one: no request goes out without it.
  const auth = await fetch("/dashboard/auth").then((r) => r.json());
  if (auth.token_required && !state.token) await askForToken("");
  await render();
  connect();
})();
