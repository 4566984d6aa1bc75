// The dashboard: reads the JSON of /v1/kpis... every few seconds and draws it with ECharts
// (vendored: echarts.min.js from the package, no CDN). No framework, no build step.
"use strict";

const REFRESH_MS = 5000;
const EXPERIMENTS_MS = 30000;
const TOKEN_KEY = "streamproc.dashboard.token";
const COLORS = ["#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#ec4899",
                "#84cc16", "#64748b", "#f97316"];
const charts = {};
const state = { experiments: null, overall: null, experimentsAt: 0, timer: null };

// -- formatting --------------------------------------------------------------------------------

const fmt = {
  int: (n) => n == null ? "–" : Math.round(n).toLocaleString("en-US"),
  pct: (x) => x == null ? "–" : (100 * x).toFixed(1) + "%",
  money: (x) => x == null ? "–" : x.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 }),
  nps: (x) => x == null ? "–" : x.toFixed(1),
};

function ratio(num, den) { return den ? num / den : null; }

// -- data --------------------------------------------------------------------------------------

async function getJson(path) {
  const headers = {};
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = "Bearer " + token;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) {
    document.getElementById("token-box").hidden = false;
    throw new Error("a token is needed");
  }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function totals(rows) {
  // Every arm and action of the segment "all" together: the headline figures.
  const keys = ["decisions", "customers", "impressions", "opens", "clicks", "buyers", "revenue"];
  const t = Object.fromEntries(keys.map((k) => [k, 0]));
  for (const r of rows) for (const k of keys) t[k] += r[k];
  t.revenue = Math.round(t.revenue * 100) / 100;
  t.open_rate = ratio(t.opens, t.impressions);
  t.click_rate = ratio(t.clicks, t.impressions);
  t.conversion = ratio(t.buyers, t.customers);
  t.revenue_per_customer = ratio(t.revenue, t.customers);
  return t;
}

function bySegment(rows) {
  const out = new Map();
  for (const r of rows) {
    const s = out.get(r.segment) || { segment: r.segment, decisions: 0, customers: 0, impressions: 0,
                                      opens: 0, clicks: 0, buyers: 0, revenue: 0 };
    for (const k of ["decisions", "customers", "impressions", "opens", "clicks", "buyers", "revenue"]) s[k] += r[k];
    out.set(r.segment, s);
  }
  return [...out.values()].sort((a, b) => b.customers - a.customers);
}

// -- charts ------------------------------------------------------------------------------------

function chart(id) {
  if (!charts[id]) charts[id] = echarts.init(document.getElementById(id), null, { renderer: "svg" });
  return charts[id];
}

function drawn(id) {
  // A chart about to be drawn with data (an empty one says why in data-empty).
  delete document.getElementById(id).dataset.empty;
  return chart(id);
}

function empty(id, text) {
  document.getElementById(id).dataset.empty = text;
  chart(id).setOption({
    title: { text, left: "center", top: "middle", textStyle: { color: "#9ca3af", fontSize: 13, fontWeight: 400 } },
    xAxis: { show: false }, yAxis: { show: false }, series: [],
  }, true);
}

const base = {
  color: COLORS, animation: false,
  grid: { left: 8, right: 16, top: 34, bottom: 8, containLabel: true },
  tooltip: { trigger: "axis" },
  legend: { top: 0, type: "scroll" },
};

function catAxis(names) {
  // Segment names on one or two lines, never rotated out of the panel.
  return { type: "category", data: names,
           axisLabel: { interval: 0, width: 78, overflow: "break", lineHeight: 13, formatter: (v) => v.replace(/_/g, " ") } };
}

function errorBars(name, points, color) {
  // points: [category index, low, high]; drawn as an I-beam by a custom series.
  return {
    type: "custom", name, data: points, z: 10, tooltip: { show: false },
    renderItem(params, api) {
      const x = api.value(0), low = api.coord([x, api.value(1)]), high = api.coord([x, api.value(2)]);
      const half = api.size([1, 0])[0] * 0.12;
      const style = { stroke: color, lineWidth: 1.5 };
      return { type: "group", children: [
        { type: "line", shape: { x1: low[0], y1: low[1], x2: high[0], y2: high[1] }, style },
        { type: "line", shape: { x1: low[0] - half, y1: low[1], x2: low[0] + half, y2: low[1] }, style },
        { type: "line", shape: { x1: high[0] - half, y1: high[1], x2: high[0] + half, y2: high[1] }, style },
      ] };
    },
  };
}

function drawHeadline(all) {
  const t = totals(all.rows);
  const nps = (all.nps.find((r) => r.segment === "all") || {}).nps;
  const shown = { decisions: fmt.int(t.decisions), customers: fmt.int(t.customers),
                  open_rate: fmt.pct(t.open_rate), click_rate: fmt.pct(t.click_rate),
                  conversion: fmt.pct(t.conversion), revenue: fmt.money(t.revenue),
                  revenue_per_customer: fmt.money(t.revenue_per_customer), nps: fmt.nps(nps) };
  for (const el of document.querySelectorAll("[data-kpi]")) el.textContent = shown[el.dataset.kpi];
  const days = all.days;
  document.getElementById("period").textContent = days.length
    ? `${days[0]} to ${days[days.length - 1]} (UTC days with counters) · conversion: buyers among customers reached · revenue attributed within the attribution window`
    : "no KPI counters yet: start workers and send events";
}

function drawSegments(seg, by) {
  const sizes = seg.segments.sizes.filter((s) => s.segmentation === by)
    .sort((a, b) => b.customers - a.customers);
  if (!sizes.length) empty("chart-sizes", `no ${by} segments counted yet`);
  else drawn("chart-sizes").setOption({ ...base, legend: { show: false },
    xAxis: catAxis(sizes.map((s) => s.segment)),
    yAxis: { type: "value", minInterval: 1 },
    series: [{ type: "bar", data: sizes.map((s) => s.customers), label: { show: true, position: "top" },
               itemStyle: { borderRadius: [4, 4, 0, 0] }, colorBy: "data" }] }, true);

  const moves = seg.segments.moves.filter((m) => m.segmentation === by);
  const day = moves.length ? moves[moves.length - 1].day : null;
  document.getElementById("moves-title").textContent = day
    ? `Moves between ${by} segments on ${day} (left: from, right: to)` : "Moves between segments, latest day";
  const today = moves.filter((m) => m.day === day);
  if (!today.length) { empty("chart-moves", `no ${by} moves counted yet`); return; }
  const from = (s) => (s === "-" ? "(new)" : s) + " ";
  const to = (s) => s === "-" ? "(left)" : s;
  const names = new Set();
  for (const m of today) { names.add(from(m.from)); names.add(to(m.to)); }
  drawn("chart-moves").setOption({
    color: COLORS, animation: false, tooltip: { trigger: "item" },
    series: [{ type: "sankey", left: 8, right: 130, top: 8, bottom: 8, nodeGap: 8, draggable: false,
               emphasis: { focus: "adjacency" }, lineStyle: { color: "gradient", opacity: 0.35 },
               label: { fontSize: 12 },
               data: [...names].map((name) => ({ name })),
               links: today.map((m) => ({ source: from(m.from), target: to(m.to), value: m.customers })) }],
  }, true);
}

function drawRates(seg, by) {
  const rows = bySegment(seg.rows).filter((r) => r.customers > 0);
  if (!rows.length) { empty("chart-rates", "no decisions counted yet"); empty("chart-revenue", "no decisions counted yet"); return; }
  const cats = rows.map((r) => r.segment);
  const pct = (v) => v == null ? null : Math.round(v * 10000) / 100;
  drawn("chart-rates").setOption({ ...base,
    tooltip: { trigger: "axis", valueFormatter: (v) => v == null ? "–" : v + "%" },
    xAxis: catAxis(cats),
    yAxis: { type: "value", axisLabel: { formatter: "{value}%" } },
    series: [
      { name: "open rate", type: "bar", data: rows.map((r) => pct(ratio(r.opens, r.impressions))) },
      { name: "click rate", type: "bar", data: rows.map((r) => pct(ratio(r.clicks, r.impressions))) },
      { name: "conversion", type: "bar", data: rows.map((r) => pct(ratio(r.buyers, r.customers))) },
    ] }, true);
  drawn("chart-revenue").setOption({ ...base, legend: { show: false },
    xAxis: catAxis(cats),
    yAxis: { type: "value" },
    series: [{ type: "bar", colorBy: "data", itemStyle: { borderRadius: [4, 4, 0, 0] },
               label: { show: true, position: "top", formatter: (p) => fmt.money(p.value) },
               data: rows.map((r) => Math.round(100 * ratio(r.revenue, r.customers)) / 100) }] }, true);
}

function drawDays(id, summary, label) {
  const rows = summary.daily_segments.filter((r) => r.customers > 0);
  if (!rows.length) { empty(id, `no ${label} counted yet`); return; }
  const days = [...new Set(rows.map((r) => r.day))].sort();
  const segments = [...new Set(rows.map((r) => r.segment))].sort();
  const at = new Map(rows.map((r) => [r.day + "|" + r.segment, r]));
  drawn(id).setOption({ ...base,
    tooltip: { trigger: "axis", valueFormatter: (v) => v == null ? "–" : v + "%" },
    xAxis: { type: "category", data: days, boundaryGap: true },
    yAxis: { type: "value", axisLabel: { formatter: "{value}%" } },
    series: segments.map((s) => ({ name: (label === "clusters" ? "cluster " : "") + s,
      type: days.length === 1 ? "bar" : "line", symbolSize: 6, connectNulls: true,
      data: days.map((d) => { const r = at.get(d + "|" + s); return r && r.conversion != null ? Math.round(r.conversion * 10000) / 100 : null; }) })),
  }, true);
}

function drawExperiments(report, overall) {
  // Every customer first (segment "all", from the report without segments), then per segment.
  const rows = [...overall.rows, ...report.rows].filter((r) => r.experiment !== "(none)");
  const treated = rows.filter((r) => r.status !== "control" && r.status !== "no control");
  const label = (r) => `${r.arm} · ${r.segment === "all" ? "everyone" : r.segment}`;
  const measured = (r) => r.uplift && r.uplift.conversion;
  if (!treated.length) empty("chart-uplift", "no experiment arm with a control group yet");
  else {
    const cats = treated.map(label);
    const box = document.getElementById("chart-uplift");
    const height = Math.max(340, 28 * treated.length + 60) + "px";
    if (box.style.height !== height) { box.style.height = height; chart("chart-uplift").resize(); }
    const points = treated.map((r, i) => measured(r) ? [i, r.uplift.conversion.value * 100,
      r.uplift.conversion.low * 100, r.uplift.conversion.high * 100] : null).filter(Boolean);
    const reach = Math.max(1, ...points.flatMap((p) => [Math.abs(p[2]), Math.abs(p[3])]).filter(Number.isFinite));
    drawn("chart-uplift").setOption({ ...base, legend: { show: false }, tooltip: { trigger: "item" },
      grid: { left: 8, right: 24, top: 12, bottom: 26, containLabel: true },
      xAxis: { type: "value", name: "conversion uplift, percentage points", nameLocation: "middle", nameGap: 24,
               min: -Math.ceil(reach), max: Math.ceil(reach) },
      yAxis: { type: "category", data: cats, inverse: true },
      series: [
        { type: "scatter", name: "uplift", symbolSize: 11, data: points.map((p) => [p[1], p[0]]),
          tooltip: { formatter: (p) => `${label(treated[p.value[1]])}: ${p.value[0].toFixed(2)} points` },
          markLine: { silent: true, symbol: "none", data: [{ xAxis: 0 }], lineStyle: { color: "#9ca3af" }, label: { show: false } } },
        { type: "custom", name: "status", tooltip: { show: false },
          data: treated.map((r, i) => measured(r) ? null : [i]).filter(Boolean),
          renderItem(params, api) {
            const r = treated[api.value(0)], at = api.coord([0, api.value(0)]);
            const text = r.status + (r.still_needed ? ` · ${fmt.int(r.still_needed)} more customers an arm` : "");
            return { type: "text", x: at[0], y: at[1], style: { text, fill: "#6b7280", fontSize: 12, align: "center", verticalAlign: "middle" } };
          } },
        { type: "custom", name: "interval", tooltip: { show: false },
          data: points.map((p) => [p[0], p[2], p[3]]),
          renderItem(params, api) {
            const y = api.value(0), a = api.coord([api.value(1), y]), b = api.coord([api.value(2), y]);
            const h = api.size([0, 1])[1] * 0.18, style = { stroke: COLORS[0], lineWidth: 2 };
            return { type: "group", children: [
              { type: "line", shape: { x1: a[0], y1: a[1], x2: b[0], y2: b[1] }, style },
              { type: "line", shape: { x1: a[0], y1: a[1] - h, x2: a[0], y2: a[1] + h }, style },
              { type: "line", shape: { x1: b[0], y1: b[1] - h, x2: b[0], y2: b[1] + h }, style }] };
          } },
      ] }, true);
  }
  const arms = overall.rows.filter((r) => r.experiment !== "(none)" && r.status !== "no control");
  if (!arms.length) empty("chart-control", "no experiment with a control group yet");
  else {
    const cats = arms.map((r) => `${r.arm}\n{muted|${fmt.int(r.customers)} customers}`);
    const value = (r) => Math.round(r.revenue_per_customer.value * 100) / 100;
    const ends = arms.flatMap((r) => [r.revenue_per_customer.low, r.revenue_per_customer.high, r.revenue_per_customer.value]).filter(Number.isFinite);
    drawn("chart-control").setOption({ ...base, legend: { show: false },
      tooltip: { trigger: "axis" },
      yAxis: { type: "value", min: Math.floor(Math.min(0, ...ends)), max: Math.ceil(Math.max(1, ...ends)) },
      xAxis: { type: "category", data: cats, axisLabel: { interval: 0, lineHeight: 16, rich: { muted: { color: "#9ca3af", fontSize: 11 } } } },
      series: [
        { type: "bar", name: "revenue per customer", barMaxWidth: 60,
          data: arms.map((r) => ({ value: value(r), itemStyle: { color: r.arm === "control" ? "#9ca3af" : COLORS[0], borderRadius: [4, 4, 0, 0] } })),
          label: { show: true, position: "top", distance: 12, formatter: (p) => fmt.money(p.value) } },
        errorBars("95% interval", arms.map((r, i) => [i, r.revenue_per_customer.low, r.revenue_per_customer.high])
          .filter((p) => Number.isFinite(p[1]) && Number.isFinite(p[2])), "#111827"),
      ] }, true);
  }
  const notes = document.getElementById("exp-notes");
  notes.replaceChildren(...arms.filter((r) => r.status !== "control").map((r) => {
    const li = document.createElement("li");
    const u = r.uplift;
    li.textContent = u && u.revenue_per_customer
      ? `${r.experiment} · ${r.arm} vs control: revenue per customer ${u.revenue_per_customer.value >= 0 ? "+" : ""}${fmt.money(u.revenue_per_customer.value)} [${fmt.money(u.revenue_per_customer.low)}, ${fmt.money(u.revenue_per_customer.high)}], conversion ${(u.conversion.value * 100).toFixed(2)} points [${(u.conversion.low * 100).toFixed(2)}, ${(u.conversion.high * 100).toFixed(2)}]`
      : `${r.experiment} · ${r.arm} vs control: ${r.status}${r.still_needed ? `, ${fmt.int(r.still_needed)} more customers an arm needed` : ""}`;
    return li;
  }), ...overall.notes.map((n) => { const li = document.createElement("li"); li.textContent = n; return li; }));
}

function drawNpsRetention(seg) {
  const nps = seg.nps.filter((r) => r.nps != null);
  if (!nps.length) empty("chart-nps", "no survey answers yet");
  else drawn("chart-nps").setOption({ ...base, legend: { show: false },
    xAxis: { type: "category", data: nps.map((r) => r.segment), axisLabel: { interval: 0 } },
    yAxis: { type: "value", min: -100, max: 100 },
    series: [{ type: "bar", data: nps.map((r) => ({ value: r.nps, itemStyle: { color: r.nps >= 0 ? "#10b981" : "#ef4444" } })),
               label: { show: true, position: "top", formatter: (p) => `${p.value} (${nps[p.dataIndex].responses})` } }] }, true);
  const cohorts = seg.retention.filter((r) => r.segment === "all" || seg.by !== "all");
  const rows = seg.retention;
  if (!rows.length) { empty("chart-retention", "no first purchases counted yet"); return; }
  const labels = rows.map((r) => `${r.cohort} · ${r.segment} (${r.customers})`);
  const months = [...new Set(rows.flatMap((r) => r.months.map((m) => m.n)))].sort((a, b) => a - b);
  if (!months.length) {
    drawn("chart-retention").setOption({ ...base, legend: { show: false },
      xAxis: { type: "value", minInterval: 1 }, yAxis: { type: "category", data: labels },
      title: { text: "cohort sizes: no repeat purchase in a later month yet", left: "center", bottom: 0, textStyle: { color: "#9ca3af", fontSize: 12, fontWeight: 400 } },
      grid: { left: 8, right: 40, top: 10, bottom: 30, containLabel: true },
      series: [{ type: "bar", data: rows.map((r) => r.customers), barMaxWidth: 28, label: { show: true, position: "right" } }] }, true);
    return cohorts;
  }
  const cells = [];
  rows.forEach((r, y) => r.months.forEach((m) => cells.push([months.indexOf(m.n), y, Math.round(1000 * (m.rate || 0)) / 10])));
  drawn("chart-retention").setOption({ color: COLORS, animation: false, tooltip: { position: "top" },
    grid: { left: 8, right: 16, top: 10, bottom: 40, containLabel: true },
    xAxis: { type: "category", data: months.map((n) => "month " + n) }, yAxis: { type: "category", data: labels },
    visualMap: { min: 0, max: Math.max(1, ...cells.map((c) => c[2])), calculable: false, orient: "horizontal", left: "center", bottom: 0, itemHeight: 80, text: ["%", ""] },
    series: [{ type: "heatmap", data: cells, label: { show: true, formatter: (p) => p.value[2] + "%" } }] }, true);
  return cohorts;
}

const QUALITY_BANDS = ["0–0.2", "0.2–0.4", "0.4–0.6", "0.6–0.8", "0.8–1"];
const QUALITY_COLORS = ["#ef4444", "#f97316", "#f59e0b", "#84cc16", "#10b981"];

function drawQuality(seg) {
  // Completeness, freshness and trust of the attributes of the customers decided for
  // (the decision record's data_quality), counted per segment in bands of 0.2.
  const rows = (seg.quality || []).filter((r) => r.decisions > 0);
  if (!rows.length) { empty("chart-quality", "no decision with a data quality score yet"); return; }
  drawn("chart-quality").setOption({ ...base, color: QUALITY_COLORS,
    xAxis: catAxis(rows.map((r) => `${r.segment}\nmean ${r.mean.toFixed(2)}`)),
    yAxis: { type: "value", minInterval: 1 },
    series: QUALITY_BANDS.map((name, i) => ({ name: "quality " + name, type: "bar", stack: "bands",
      data: rows.map((r) => r.bands[i]) })) }, true);
}

function drawBandit(b) {
  const actions = b.actions.filter((a) => a.mean != null || a.share != null);
  if (!actions.length) { empty("chart-bandit", "the bandit has learnt nothing yet"); return; }
  drawn("chart-bandit").setOption({ ...base,
    tooltip: { trigger: "axis", valueFormatter: (v) => v == null ? "–" : v + "%" },
    yAxis: { type: "category", data: actions.map((a) => a.action.replace(/_/g, " ")), inverse: true,
             axisLabel: { width: 130, overflow: "truncate" } },
    xAxis: { type: "value", max: 100, axisLabel: { formatter: "{value}%" } },
    series: [
      { name: "posterior mean", type: "bar", data: actions.map((a) => a.mean == null ? null : Math.round(a.mean * 1000) / 10) },
      { name: "share of traffic", type: "bar", data: actions.map((a) => a.share == null ? null : Math.round(a.share * 1000) / 10) },
    ] }, true);
}

function drawModels(m) {
  const auc = m.intent_auc;
  const age = m.snapshot_age_s;
  document.getElementById("models-text").textContent = m.served
    ? `snapshot v${m.model_version}, ${age < 120 ? Math.round(age) + " s" : Math.round(age / 60) + " min"} old · ${fmt.int(m.intent_examples)} labels · drifts ${fmt.int(m.drifts_total)} (detections ${fmt.int(m.drift_detections_total)})`
    : (m.snapshots ? "no model snapshot served yet" : "no snapshots: STREAMPROC_MODEL_SECRET not set");
  const learnt = m.served && m.intent_examples > 0;
  drawn("chart-models").setOption({ animation: false,
    series: [{ type: "gauge", min: 0.5, max: 1, startAngle: 200, endAngle: -20, radius: "95%", center: ["50%", "62%"],
               progress: { show: true, width: 14 }, axisLine: { lineStyle: { width: 14 } },
               axisTick: { show: false }, splitLine: { length: 8 }, axisLabel: { distance: 18, fontSize: 11 },
               pointer: { show: false }, title: { offsetCenter: [0, "-22%"], fontSize: 12, color: "#6b7280" },
               detail: { valueAnimation: false, fontSize: learnt ? 28 : 16, offsetCenter: [0, "8%"], formatter: (v) => learnt ? v.toFixed(3) : "no labels yet" },
               data: [{ value: learnt ? Math.max(0.5, auc) : 0.5, name: "intent AUC" }] }] }, true);
}

function drawPipeline(p) {
  document.getElementById("pipeline-text").textContent =
    `${p.workers_alive} worker(s) · ${p.events_per_s.toFixed(1)} events/s · lag ${fmt.int(p.lag)} · ${fmt.int(p.deadletters_total)} dead letters`;
  const lagByTopic = new Map();
  for (const row of p.partitions) lagByTopic.set(row.topic, (lagByTopic.get(row.topic) || 0) + row.lag);
  const cats = [...lagByTopic.keys()].map((t) => "lag " + t.split(".").pop());
  const reasons = p.deadletters;
  drawn("chart-pipeline").setOption({ ...base, legend: { show: false },
    grid: { left: 8, right: 44, top: 20, bottom: 8, containLabel: true },
    tooltip: { trigger: "axis" },
    xAxis: { type: "value", minInterval: 1 },
    yAxis: { type: "category", data: [...cats, ...reasons.map((r) => "dead: " + r.reason)], inverse: true,
             axisLabel: { width: 150, overflow: "truncate" } },
    series: [{ type: "bar", label: { show: true, position: "right" },
               data: [...[...lagByTopic.values()].map((v) => ({ value: v, itemStyle: { color: COLORS[0] } })),
                      ...reasons.map((r) => ({ value: r.count, itemStyle: { color: "#ef4444" } }))] }] }, true);
}

function fillSegmentations(names) {
  // The segmentations the counters hold (those of the decision records), besides the usual.
  const select = document.getElementById("by");
  const have = new Set([...select.options].map((o) => o.value));
  for (const name of names) {
    if (name === "all" || have.has(name)) continue;
    select.add(new Option(name.replace(/_/g, " "), name));
  }
}

// -- the loop ----------------------------------------------------------------------------------

async function refresh() {
  const by = document.getElementById("by").value;
  const days = document.getElementById("days").value;
  const live = document.getElementById("live");
  const problems = [];
  const step = async (what, work) => { try { await work(); } catch (e) { problems.push(`${what}: ${e.message}`); } };
  await step("KPIs", async () => {
    const [all, seg, clusters] = await Promise.all([
      getJson(`/v1/kpis?days=${days}&by=all`), getJson(`/v1/kpis?days=${days}&by=${by}`),
      getJson(`/v1/kpis?days=${days}&by=cluster`)]);
    drawHeadline(all);
    fillSegmentations(all.segmentations);
    drawSegments(seg, by);
    drawRates(seg, by);
    drawDays("chart-segment-days", seg, "segments");
    drawDays("chart-cluster-days", clusters, "clusters");
    drawNpsRetention(seg);
    drawQuality(seg);
  });
  await step("experiments", async () => {
    if (!state.experiments || Date.now() - state.experimentsAt > EXPERIMENTS_MS || state.experiments.by !== `segments.${by}`) {
      [state.experiments, state.overall] = await Promise.all([
        getJson(`/v1/kpis/experiments?by=segments.${by}`), getJson("/v1/kpis/experiments")]);
      state.experimentsAt = Date.now();
    }
    drawExperiments(state.experiments, state.overall);
    document.getElementById("exp-age").textContent = `(report of the topics, at most ${state.experiments.max_age_s} s old)`;
  });
  await step("bandit", async () => drawBandit(await getJson(`/v1/kpis/bandit?days=${days}`)));
  await step("models", async () => drawModels(await getJson("/v1/kpis/models")));
  await step("pipeline", async () => drawPipeline(await getJson("/v1/kpis/pipeline")));
  const error = document.getElementById("error");
  error.hidden = !problems.length;
  error.textContent = problems.join(" · ");
  live.className = "live " + (problems.length ? "bad" : "ok");
  live.textContent = (problems.length ? "partly updated " : "live · updated ") + new Date().toLocaleTimeString();
  document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
}

function schedule() {
  clearTimeout(state.timer);
  refresh().finally(() => { state.timer = setTimeout(schedule, REFRESH_MS); });
}

document.getElementById("by").addEventListener("change", () => { state.experiments = null; schedule(); });
document.getElementById("days").addEventListener("change", schedule);
document.getElementById("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
  document.getElementById("token-box").hidden = true;
  schedule();
});
window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
schedule();
