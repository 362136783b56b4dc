// The search page. Every value from a record goes into the page with textContent, never as HTML.
"use strict";
const FIELDS = ["q", "level", "source", "status", "project", "env", "path", "requestId", "deployment", "stream"];
const LINKS = { requestId: "requestId", deploymentId: "deployment", projectId: "project", path: "path" };
const $ = (id) => document.getElementById(id);
let offset = 0;
let liveTimer = null;
let shown = null; // the AbortController of the search on screen: a newer search aborts it
let pending = 0; // requests of that search not answered yet

function token() { return sessionStorage.getItem("drainToken") || ""; }

function params() {
  const p = new URLSearchParams();
  for (const f of FIELDS) if ($(f).value) p.set(f, $(f).value);
  const range = $("range").value;
  if (range === "custom") {
    if ($("since").value) p.set("since", $("since").value);
    if ($("until").value) p.set("until", $("until").value);
  } else if (range) p.set("since", range);
  return p;
}

function loadFromUrl() {
  const p = new URLSearchParams(location.search);
  for (const f of FIELDS) $(f).value = p.get(f) || "";
  const since = p.get("since");
  if (since && !["15m", "1h", "24h", "7d"].includes(since)) {
    $("range").value = "custom"; $("since").value = since; $("until").value = p.get("until") || "";
  } else $("range").value = since === null ? "1h" : since;
  showCustom();
}

function showCustom() { const c = $("range").value === "custom"; $("since").hidden = !c; $("until").hidden = !c; }

async function api(path, p, signal) {
  const response = await fetch(`${path}?${p}`, { headers: { Authorization: `Bearer ${token()}` }, signal });
  if (response.status === 401) { logout("wrong or missing token"); throw new Error("unauthorized"); }
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function logout(message) {
  sessionStorage.removeItem("drainToken");
  $("app").hidden = true; $("login").hidden = false; $("login-error").textContent = message || "";
}

function utc(ms) { return typeof ms === "number" ? new Date(ms).toISOString().replace("T", " ").slice(0, 23) : "-"; }

function cell(row, text, field) {
  const td = document.createElement("td");
  if (field && text) {
    const a = document.createElement("a");
    a.className = "filter"; a.textContent = text; a.title = `filter by ${field}`;
    a.addEventListener("click", (e) => { e.stopPropagation(); $(LINKS[field]).value = text; run(); });
    td.appendChild(a);
  } else td.textContent = text === undefined || text === null ? "" : String(text);
  row.appendChild(td);
}

function addRows(records) {
  const body = $("results").tBodies[0];
  for (const r of records) {
    const tr = document.createElement("tr");
    const proxy = r.proxy && typeof r.proxy === "object" ? r.proxy : {};
    cell(tr, utc(r.timestamp)); cell(tr, r.level); cell(tr, r.source);
    cell(tr, r.statusCode ?? proxy.statusCode);
    cell(tr, r.path ?? proxy.path, "path"); cell(tr, r.message);
    tr.addEventListener("click", () => showRecord(r));
    body.appendChild(tr);
  }
}

function showRecord(r) {
  const pre = $("record");
  pre.replaceChildren();
  const lines = JSON.stringify(r, null, 2).split("\n");
  for (const line of lines) {
    const m = line.match(/^(\s*)"(requestId|deploymentId|projectId|path)": "(.*)",?$/);
    if (m && LINKS[m[2]]) {
      pre.appendChild(document.createTextNode(`${m[1]}"${m[2]}": "`));
      const a = document.createElement("a");
      const value = JSON.parse(`"${m[3]}"`);
      a.className = "filter"; a.textContent = m[3]; a.title = `filter by ${m[2]}`;
      a.addEventListener("click", () => { $(LINKS[m[2]]).value = value; run(); });
      pre.appendChild(a);
      pre.appendChild(document.createTextNode(line.endsWith(",") ? '",\n' : '"\n'));
    } else pre.appendChild(document.createTextNode(line + "\n"));
  }
  pre.hidden = false;
}

const LEVELS = ["info", "warning", "error", "fatal"];

// Known levels in their order, then any other (each its own name, one grey), then "-" (no level).
function levelsOf(counts) {
  const seen = new Set(counts.map(([, level]) => level));
  const others = [...seen].filter((l) => !LEVELS.includes(l) && l !== "-").sort();
  return [...LEVELS.filter((l) => seen.has(l)), ...others, ...(seen.has("-") ? ["-"] : [])];
}

function levelClass(level) { return LEVELS.includes(level) ? level : level === "-" ? "no-level" : "other-level"; }

function drawHistogram(h) {
  const box = $("histogram");
  box.replaceChildren();
  const n = h.width ? Math.ceil((h.end - h.start) / h.width) : 0;
  const buckets = Array.from({ length: n }, () => ({}));
  for (const [b, level, count] of h.counts) if (buckets[b]) buckets[b][level] = count;
  const totals = buckets.map((b) => Object.values(b).reduce((x, y) => x + y, 0));
  const peak = Math.max(1, ...totals);
  const levels = levelsOf(h.counts);
  buckets.forEach((b, i) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.title = `${utc(h.start + i * h.width)}: ${totals[i]}`;
    bar.style.height = "100%";
    for (const level of levels) {
      if (!b[level]) continue;
      const part = document.createElement("div");
      part.className = levelClass(level); part.style.height = `${(100 * b[level]) / peak}%`;
      bar.appendChild(part);
    }
    bar.addEventListener("click", () => {
      $("range").value = "custom"; showCustom();
      $("since").value = new Date(h.start + i * h.width).toISOString();
      $("until").value = new Date(h.start + (i + 1) * h.width).toISOString();
      run();
    });
    box.appendChild(bar);
  });
  drawAxes(h, n, totals, peak, levels);
}

// The histogram's scale (its tallest bar, what one bar spans), its colours, and its time axis.
function drawAxes(h, n, totals, peak, levels) {
  const caption = $("histogram-caption");
  caption.replaceChildren();
  const matches = totals.reduce((x, y) => x + y, 0);
  const scale = matches ? `${matches.toLocaleString("en")} matches; tallest bar ${peak.toLocaleString("en")}, `
    + `one bar ${span(h.width)}` : "no matches";
  caption.appendChild(document.createTextNode(scale));
  for (const level of levels) {
    const key = document.createElement("span");
    key.className = `key ${levelClass(level)}`;
    const name = document.createElement("span");
    name.textContent = level === "-" ? "no level" : level;
    caption.append(" ", key, name);
  }
  const axis = $("histogram-axis");
  axis.replaceChildren();
  if (!n) return;
  const end = h.start + n * h.width;
  for (let i = 0; i <= 4; i += 1) {
    const label = document.createElement("span");
    label.textContent = tick(h.start + ((end - h.start) * i) / 4, end - h.start, i === 0);
    axis.appendChild(label);
  }
}

function span(ms) {
  for (const [unit, size] of [["d", 86400000], ["h", 3600000], ["min", 60000], ["s", 1000]]) {
    if (ms >= size) return `${Number.isInteger(ms / size) ? ms / size : (ms / size).toPrecision(2)} ${unit}`;
  }
  return `${ms} ms`;
}

function tick(ms, range, first) {
  const iso = new Date(ms).toISOString();
  if (range > 2 * 86400000) return `${iso.slice(5, 10)} ${iso.slice(11, 16)}`;
  return first ? `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC` : iso.slice(11, range < 600000 ? 19 : 16);
}

// The table is filled as soon as /api/search answers; the histogram (it counts every match, so
// is often the slower) is asked for then, so the table's query has the CPU to itself, and drawn
// when it arrives. A new search aborts the requests of the one before; the server stops them.
function run(more) {
  const p = params();
  history.replaceState(null, "", `?${p}`);
  if (!more) {
    if (shown) shown.abort();
    shown = new AbortController(); pending = 0;
    offset = 0; $("results").tBodies[0].replaceChildren(); $("record").hidden = true;
    $("histogram").classList.add("loading");
  }
  const search = shown;
  const page = new URLSearchParams(p); page.set("limit", "100"); page.set("offset", String(offset));
  $("status-line").textContent = "searching…";
  const rows = api("/api/search", page, search.signal).then((found) => {
    addRows(found.records);
    offset += found.records.length;
    $("more").hidden = found.records.length < 100;
    $("status-line").textContent = `${offset} records shown`;
  });
  track(rows, search, "");
  if (more) return;
  track(rows.catch(() => {}).then(() => {
    if (search.signal.aborted) return null;
    return api("/api/histogram", p, search.signal).then((h) => {
      drawHistogram(h); $("histogram").classList.remove("loading");
    });
  }), search, "histogram: ");
}

function track(request, search, prefix) {
  pending += 1;
  request.catch((error) => {
    if (search.signal.aborted) return;
    const message = String(error.message || error);
    $("status-line").textContent = prefix ? `${$("status-line").textContent} (${prefix}${message})` : message;
  }).finally(() => { if (search === shown) pending -= 1; });
}

function start() {
  $("login").hidden = true; $("app").hidden = false; loadFromUrl(); run();
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", async (e) => {
    e.preventDefault();
    sessionStorage.setItem("drainToken", $("token").value);
    const probe = await fetch("/api/search?limit=1", { headers: { Authorization: `Bearer ${token()}` } });
    if (probe.ok) start(); else logout("wrong token");
  });
  $("search").addEventListener("submit", (e) => { e.preventDefault(); run(); });
  $("range").addEventListener("change", showCustom);
  $("more").addEventListener("click", () => run(true));
  $("live").addEventListener("change", () => {
    clearInterval(liveTimer);
    if ($("live").checked) liveTimer = setInterval(() => { if (pending === 0) run(); }, 2000);
  });
  if (token()) start(); else logout("");
});
