// Line charts in SVG, drawn from the timeline API: one line per version,
// the x axis the last minutes, the y axis from zero to the largest value.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const W = 520, H = 190, PAD = { left: 58, right: 10, top: 10, bottom: 22 };

function svg(tag, attrs, parent) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  if (parent) parent.appendChild(el);
  return el;
}

// A round upper bound for the y axis.
function niceMax(v) {
  if (!(v > 0)) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

// Draws into `el` (emptied first). `series` is [{name, color, points: [[ms, value]]}],
// `window` the span of the x axis in ms, `format` turns a value into a label.
function lineChart(el, { title, series, window, format }) {
  el.replaceChildren();
  const h3 = document.createElement("h3");
  h3.textContent = title;
  el.appendChild(h3);
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title }, el);
  const now = Date.now();
  const x0 = now - window;
  const max = niceMax(Math.max(0, ...series.flatMap(s => s.points.map(p => p[1]))));
  const x = t => PAD.left + (W - PAD.left - PAD.right) * Math.max(0, t - x0) / window;
  const y = v => H - PAD.bottom - (H - PAD.top - PAD.bottom) * v / max;
  for (const f of [0, 0.5, 1]) {
    const v = max * f;
    svg("line", { x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v), class: "axis" }, root);
    svg("text", { x: PAD.left - 4, y: y(v) + 3, "text-anchor": "end", class: "tick" }, root).textContent = format(v);
  }
  // Four ticks on the x axis, in seconds or minutes ago.
  for (let i = 4; i >= 0; i--) {
    const ago = window * i / 4;
    const label = i === 0 ? "now" : ago < 120000 ? `-${Math.round(ago / 1000)}s` : `-${(ago / 60000).toFixed(ago % 60000 ? 1 : 0)}m`;
    svg("text", { x: x(now - ago), y: H - 6, "text-anchor": i === 4 ? "start" : i === 0 ? "end" : "middle", class: "tick" }, root).textContent = label;
  }
  for (const s of series) {
    const pts = s.points.filter(p => p[0] >= x0);
    if (pts.length === 0) continue;
    const d = pts.map(p => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    const line = svg("polyline", { points: d, fill: "none", stroke: s.color, "stroke-width": 2, "stroke-dasharray": s.dashed ? "4 3" : "" }, root);
    line.dataset.version = s.name;
    const last = pts[pts.length - 1];
    svg("circle", { cx: x(last[0]), cy: y(last[1]), r: 2.5, fill: s.color }, root);
  }
  const legend = document.createElement("div");
  legend.className = "legend";
  for (const s of series) {
    const item = document.createElement("span");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = s.color;
    item.append(sw, s.label || s.name);
    legend.appendChild(item);
  }
  el.appendChild(legend);
}

window.lineChart = lineChart;
