// The release dashboard: polls the admin API (the session cookie stands in
// for the token) and draws the selected service; every control calls the
// API and shows the API's own message when it refuses.
"use strict";

const POLL_MS = 2000;
const WINDOW_MS = 5 * 60 * 1000;
const COLORS = { stable: "#2563eb", candidate: "#ea580c", other: ["#16a34a", "#7c3aed", "#0891b2", "#a16207"] };

// The service named in the address (#NAME), if it is one; a malformed one is ignored.
function hashService() {
  try { return decodeURIComponent(location.hash.slice(1)) || null; } catch (_) { return null; }
}
const state = { selected: hashService(), versionsKey: "", weightsDirty: false };

const $ = sel => document.querySelector(sel);
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(e.dataset, v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

// Calls the admin API; throws an Error with the API's message on refusal.
async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: { "x-wasmhost-ui": "1" } };
  if (body !== undefined) {
    init.headers["content-type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { /* not JSON */ }
  if (resp.status === 401) {
    const why = data && data.error ? data.error : "log in again";
    showError(why);
    setTimeout(() => { location.href = why.includes("expired") ? "/ui/login?why=expired" : "/ui/login"; }, 1500);
    throw new Error(why);
  }
  if (!resp.ok) throw new Error(data && data.error ? data.error : `${resp.status} ${text}`);
  return data;
}

function showError(message) {
  const e = $("#error");
  e.textContent = message;
  e.hidden = false;
  $("#notice").hidden = true;
}
function showNotice(message) {
  const n = $("#notice");
  n.textContent = message;
  n.hidden = false;
  $("#error").hidden = true;
}

// A change: the button waits for the API, then the page shows its answer.
async function change(action, done, method, path, body) {
  try {
    await api(method, path, body);
    showNotice(done);
    state.weightsDirty = false;
    state.versionsKey = "";
    await refresh();
  } catch (e) {
    showError(`${action} refused: ${e.message}`);
  }
}

const pct = v => `${(v * 100).toFixed(v > 0 && v < 0.1 ? 1 : 0)}%`;
const ms = v => v >= 100 ? `${v.toFixed(0)} ms` : `${v.toFixed(v >= 10 ? 1 : 2)} ms`;
const rate = v => v >= 100 ? v.toFixed(0) : v.toFixed(1);

// Which role each version plays: the canary's candidate and stable, else
// the promoted version as stable and any other taking traffic as candidate.
function roles(svc) {
  const r = {};
  const stable = svc.canary ? svc.canary.stable : svc.stable;
  let i = 0;
  for (const v of svc.versions) {
    if (v.version === stable) r[v.version] = "stable";
    else if (svc.canary && v.version === svc.canary.candidate) r[v.version] = "candidate";
    else if (!svc.canary && stable && v.weight > 0) r[v.version] = "candidate";
    else r[v.version] = "other";
  }
  if (!stable && svc.versions.length) r[svc.versions[svc.versions.length - 1].version] = "stable";
  for (const v of svc.versions) if (r[v.version] === "other") r[v.version] = `other${i++}`;
  return r;
}
function color(role) {
  if (role === "stable") return COLORS.stable;
  if (role === "candidate") return COLORS.candidate;
  return COLORS.other[Number(role.slice(5)) % COLORS.other.length];
}

// Files that did not load, and versions compiling now: above everything.
function renderProblems(list) {
  const box = $("#problems");
  const items = [
    ...list.load_errors.map(e => el("li", { class: "bad" }, el("code", {}, e.file), ` did not load: ${e.error}`)),
    ...(list.warnings || []).map(e => el("li", {}, el("code", {}, e.file), ` ${e.error}`)),
    ...(list.loading || []).map(l => el("li", {}, el("code", {}, l.file), ` compiling (${(l.elapsed_ms / 1000).toFixed(1)} s)`)),
  ];
  box.hidden = items.length === 0;
  box.replaceChildren(el("h3", {}, "Plugins directory"), el("ul", { id: "load-errors" }, ...items));
}

function renderNav(list) {
  const nav = $("#services");
  nav.replaceChildren(...list.services.map(s => {
    const split = s.versions.filter(v => v.weight > 0).map(v => `${v.version} ${v.weight}%`).join(" · ");
    return el("button", {
      type: "button", "aria-current": String(s.name === state.selected), dataset: { service: s.name },
      onclick: () => { state.selected = s.name; location.hash = s.name; state.versionsKey = ""; refresh(); },
    }, s.name, el("small", {}, split || "no traffic"));
  }));
}

function versionsTable(svc, r, live) {
  const rows = svc.versions.map(v => {
    const m = v.metrics;
    const last = live[v.version];
    const role = r[v.version];
    const tags = [];
    if (role === "stable") tags.push(el("span", { class: "tag stable" }, "stable"));
    if (role === "candidate") tags.push(el("span", { class: "tag candidate" }, svc.canary ? "canary" : "candidate"));
    if (v.state && v.state !== "serving") tags.push(el("span", { class: "tag ejected" }, v.state));
    const errRate = m.requests ? m.errors / m.requests : 0;
    return el("tr", { dataset: { version: v.version } },
      el("td", {}, el("span", { class: "swatch" }), v.version, ...tags),
      el("td", { class: "weight" }, `${v.weight}%`),
      el("td", { class: "rps" }, last ? rate(last.rps) : "–"),
      el("td", { class: "requests" }, String(m.requests)),
      el("td", { class: errRate > 0 ? "errors bad" : "errors" }, `${m.errors} (${pct(errRate)})`),
      el("td", { class: "p50" }, ms(m.p50_ms)),
      el("td", { class: "p99" }, ms(m.p99_ms)),
      el("td", { class: "ejections" }, String(v.ejections || 0)),
      el("td", {}, v.weight === 100 && role === "stable" ? "" :
        el("button", { type: "button", class: "secondary", dataset: { action: "promote", version: v.version },
          onclick: () => change(`Promote ${v.version}`, `Promoted ${v.version}: it takes all the traffic`, "POST", `/admin/services/${svc.name}/promote`, { version: v.version }) },
          "Promote")));
  });
  const table = el("table", { id: "versions" },
    el("thead", {}, el("tr", {}, ...["Version", "Weight", "req/s", "Requests", "5xx", "p50", "p99", "Ejections", ""].map(h => el("th", {}, h)))),
    el("tbody", {}, ...rows));
  table.querySelectorAll("tbody tr").forEach(tr => { tr.querySelector(".swatch").style.background = color(r[tr.dataset.version]); });
  return table;
}

function weightsForm(svc) {
  const inputs = svc.versions.map(v => el("label", {}, `${v.version} `,
    el("input", { type: "number", min: "0", max: "100", step: "1", name: v.version, value: String(v.weight),
      oninput: () => { state.weightsDirty = true; } }), "%"));
  const form = el("form", { id: "weights", class: "row",
    onsubmit: ev => {
      ev.preventDefault();
      const weights = {};
      for (const input of form.querySelectorAll("input")) weights[input.name] = Number(input.value);
      const split = Object.entries(weights).map(([k, v]) => `${k}=${v}`).join(", ");
      change("Weight change", `Weights set: ${split}`, "PUT", `/admin/services/${svc.name}/release`, { weights });
    } }, ...inputs, el("button", { type: "submit", id: "apply-weights" }, "Apply weights"));
  return el("div", { class: "card" }, el("h3", {}, "Weights"), form);
}

function canaryCard(svc) {
  const c = svc.canary;
  const controls = el("div", { class: "row" },
    el("button", { type: "button", class: "danger", id: "rollback",
      onclick: () => change("Rollback", "Rolled back: the stable version takes all the traffic", "POST", `/admin/services/${svc.name}/rollback`) }, "Roll back"));
  if (!c) return el("div", { class: "card", id: "canary" }, el("h3", {}, "Canary"), el("p", { class: "empty" }, "No canary in progress."), controls);
  const cand = svc.versions.find(v => v.version === c.candidate);
  controls.prepend(el("button", { type: "button", class: "secondary", id: c.paused ? "resume" : "pause",
    onclick: () => change(c.paused ? "Resume" : "Pause", c.paused ? "Canary resumed" : "Canary paused: no step, no analysis", "POST", `/admin/services/${svc.name}/${c.paused ? "resume" : "pause"}`) },
    c.paused ? "Resume" : "Pause"));
  return el("div", { class: "card", id: "canary" }, el("h3", {}, "Canary"),
    el("p", {}, `${c.candidate} beside ${c.stable}: step ${c.step + 1}, ${cand ? cand.weight : 0}% of traffic`,
      c.paused ? el("span", { class: "tag" }, "paused") : null,
      c.ejections ? el("span", { class: "tag ejected" }, `${c.ejections} ejection(s) this step`) : null),
    controls);
}

function historyCard(svc) {
  const items = [...svc.history].reverse().map(h => el("li", { dataset: { action: h.action } },
    el("time", {}, new Date(h.at * 1000).toLocaleTimeString()), el("strong", {}, h.action), ` ${h.detail}`));
  return el("div", { class: "card" }, el("h3", {}, "History"),
    items.length ? el("ol", { class: "history", id: "history" }, ...items) : el("p", { class: "empty", id: "history" }, "No release changes yet."));
}

function deadLetters(svc, topics) {
  const groups = (topics && topics.groups ? topics.groups : []).filter(g => g.service === svc.name);
  if (!groups.length) return null;
  return el("div", { class: "card", id: "messages" }, el("h3", {}, "Messages"),
    el("table", {}, el("thead", {}, el("tr", {}, ...["Group", "Topic", "Backlog", "In flight", "Redelivering", "Dead letters"].map(h => el("th", {}, h)))),
      el("tbody", {}, ...groups.map(g => el("tr", {}, el("td", {}, g.group), el("td", {}, g.topic), el("td", {}, String(g.backlog)),
        el("td", {}, String(g.in_flight)), el("td", {}, String(g.redelivering)),
        el("td", { class: g.dead_letters ? "bad" : "" }, String(g.dead_letters)))))));
}

function charts(svc, timeline, r) {
  const wrap = el("div", { class: "charts" });
  const series = (f, dashed) => timeline.versions.map(s => ({
    name: s.version, label: s.version, color: color(r[s.version] || "other0"), dashed,
    points: s.points.map(p => [p.at_ms, f(p)]),
  }));
  const specs = [
    ["Requests per second", p => p.rps, v => v.toFixed(v >= 10 ? 0 : 1)],
    ["Error rate (5xx)", p => p.error_rate, v => `${(v * 100).toFixed(0)}%`],
    ["p99 latency", p => p.p99_ms, v => `${v.toFixed(v >= 10 ? 0 : 2)} ms`],
    ["p50 latency", p => p.p50_ms, v => `${v.toFixed(v >= 10 ? 0 : 2)} ms`],
  ];
  // The x axis spans what there is to show: from one to five minutes.
  const first = Math.min(...timeline.versions.flatMap(s => s.points.map(p => p.at_ms)), Date.now());
  const span = Math.min(WINDOW_MS, Math.max(60000, Date.now() - first + 2000));
  for (const [title, f, format] of specs) {
    const box = el("div", { class: "card chart", dataset: { chart: title } });
    window.lineChart(box, { title, series: series(f), window: span, format });
    wrap.appendChild(box);
  }
  return wrap;
}

async function refresh() {
  try {
    const list = await api("GET", "/admin/services");
    if (!state.selected || !list.services.some(s => s.name === state.selected)) {
      const pick = list.services.find(s => s.versions.length > 1) || list.services[0];
      state.selected = pick ? pick.name : null;
    }
    renderNav(list);
    renderProblems(list);
    const section = $("#service");
    if (!state.selected) {
      section.replaceChildren(el("p", { class: "empty" }, "No service is loaded: drop NAME@VERSION.wasm into the plugins directory."));
      return;
    }
    const name = encodeURIComponent(state.selected);
    const [svc, timeline, topics] = await Promise.all([
      api("GET", `/admin/services/${name}`),
      api("GET", `/admin/services/${name}/timeline`),
      api("GET", "/admin/topics").catch(() => null),
    ]);
    const r = roles(svc);
    const live = {};
    for (const s of timeline.versions) if (s.points.length) live[s.version] = s.points[s.points.length - 1];
    const key = svc.name + "|" + svc.versions.map(v => `${v.version}=${v.weight}`).join(",");
    const keepWeights = state.weightsDirty && key === state.versionsKey ? $("#weights-card") : null;
    const weights = keepWeights || weightsForm(svc);
    weights.id = "weights-card";
    state.versionsKey = key;
    const sticky = svc.sticky ? el("span", { class: "tag" }, `sticky by ${svc.sticky}`) : null;
    section.replaceChildren(...[
      el("div", { class: "card" }, el("h2", {}, svc.name, sticky),
        el("p", { class: "empty" }, `Routes ${svc.routes.join(", ") || "—"} · ${svc.running} running now`),
        versionsTable(svc, r, live)),
      charts(svc, timeline, r),
      el("div", { class: "row" }, weights),
      canaryCard(svc),
      deadLetters(svc, topics),
      historyCard(svc)].filter(Boolean));
    $("#updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (!$("#error").textContent) showError(`The admin API did not answer: ${e.message}`);
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, POLL_MS);
}
loop();
