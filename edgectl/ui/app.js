// The edgectl dashboard: the live stream (GET /api/v1/events) applied to local views, drawn as SVG and
// tables. No framework, no network access beyond this origin. When the stream is not served, the same views
// are read from the JSON routes every second instead.

const SVG = "http://www.w3.org/2000/svg";
const TIERS = ["cloud", "metro", "edge"];
const POLL_MS = 1000;
const EXTRAS_MS = 3000;
const EVENTS_MAX = 500;

// Per diffed list of a view: how a row's key is made (the server sends "key"; polled rows get the same).
const KEYS = {
  topology: {
    sites: (r) => r.id,
    switches: (r) => r.id,
    links: (r) => `${r.src}:${r.src_port}>${r.dst}:${r.dst_port}`,
    hosts: (r) => r.id,
    nodes: (r) => r.id,
  },
  workloads: { workloads: (r) => r.id },
};

const model = {
  generation: null,
  views: { topology: null, workloads: null, service_paths: null },
  events: [],
  extras: {}, // routes, xds, replicas, config, identities, services: plain GETs
  mode: "connecting",
};

// -- the stream -------------------------------------------------------------------------------------------

function keyed(name, view) {
  const lists = KEYS[name];
  if (!lists || !view) return view;
  const out = { ...view };
  for (const [field, key] of Object.entries(lists)) {
    if (Array.isArray(view[field])) out[field] = view[field].map((r) => ("key" in r ? r : { ...r, key: String(key(r)) }));
  }
  return out;
}

export function applySnapshot(m, data) {
  m.generation = data.generation;
  for (const [name, view] of Object.entries(data.views || {})) {
    if (name === "events") m.events = view.slice(-EVENTS_MAX);
    else m.views[name] = keyed(name, view);
  }
}

export function applyDelta(m, data) {
  m.generation = data.generation;
  for (const [name, whole] of Object.entries(data.replace || {})) m.views[name] = keyed(name, whole);
  for (const [name, lists] of Object.entries(data.views || {})) {
    const view = { ...(m.views[name] || {}) };
    for (const [field, change] of Object.entries(lists)) {
      const rows = new Map((view[field] || []).map((r) => [r.key, r]));
      for (const key of change.remove || []) rows.delete(key);
      for (const row of change.upsert || []) rows.set(row.key, row);
      view[field] = [...rows.values()];
    }
    m.views[name] = view;
  }
  for (const view of Object.values(m.views)) if (view && "generation" in view) view.generation = data.generation;
  if (data.events && data.events.length) m.events = m.events.concat(data.events).slice(-EVENTS_MAX);
}

let source = null;
let pollTimer = null;

function connect() {
  if (typeof EventSource === "undefined") return startPolling();
  let opened = false;
  source = new EventSource("/api/v1/events");
  source.addEventListener("snapshot", (e) => {
    opened = true;
    stopPolling();
    applySnapshot(model, JSON.parse(e.data));
    setMode("live");
    schedule();
  });
  source.addEventListener("delta", (e) => {
    applyDelta(model, JSON.parse(e.data));
    schedule();
  });
  source.onerror = () => {
    // A network error: EventSource reconnects by itself with Last-Event-ID. A stream never served (404, an
    // older controller): it gives up (CLOSED), and the views are polled instead.
    if (source.readyState === EventSource.CLOSED) {
      source = null;
      startPolling();
      setTimeout(connect, opened ? 1000 : 30000);
    } else setMode(opened ? "reconnecting" : "connecting");
  };
}

function startPolling() {
  if (pollTimer !== null) return;
  setMode("polling");
  const tick = async () => {
    try {
      const [topology, workloads, paths] = await Promise.all(
        ["/api/v1/topology", "/api/v1/workloads", "/api/v1/service-paths"].map(getJson),
      );
      if (pollTimer === null) return; // the stream came back meanwhile
      const before = model.views;
      const views = {
        topology: keyed("topology", topology),
        workloads: keyed("workloads", workloads),
        service_paths: paths,
      };
      if (before.topology) model.events = model.events.concat(changesBetween(before, views)).slice(-EVENTS_MAX);
      model.views = views;
      model.generation = topology.generation;
      setMode("polling");
    } catch (err) {
      setMode("offline");
    }
    schedule();
  };
  pollTimer = setInterval(tick, POLL_MS);
  tick();
}

function stopPolling() {
  if (pollTimer !== null) clearInterval(pollTimer);
  pollTimer = null;
}

// Timeline entries when polling (the stream sends its own): what a client can see change between two reads.
export function changesBetween(before, after) {
  const at = Date.now() / 1000;
  const out = [];
  const links = new Map((before.topology.links || []).map((l) => [l.key, l]));
  for (const l of after.topology.links || []) {
    const old = links.get(l.key);
    if (old && old.up !== l.up) out.push({ at, kind: l.up ? "LinkCameUp" : "LinkWentDown", text: `link ${l.src}-${l.dst} ${l.up ? "up" : "down"}` });
  }
  const nodes = new Map((before.topology.nodes || []).map((n) => [n.key, n]));
  for (const n of after.topology.nodes || []) {
    const old = nodes.get(n.key);
    if (old && old.up !== n.up) out.push({ at, kind: n.up ? "NodeUp" : "NodeDown", text: `node ${n.id} ${n.up ? "up" : "down"}` });
  }
  const was = new Map(((before.workloads && before.workloads.workloads) || []).map((w) => [w.id, w]));
  const now = new Set();
  for (const w of after.workloads.workloads || []) {
    now.add(w.id);
    const old = was.get(w.id);
    if (!old) out.push({ at, kind: "WorkloadPlaced", text: `${w.id} (${w.service}) placed on ${w.node}` });
    else if (old.node !== w.node) out.push({ at, kind: "WorkloadMoved", text: `${w.id} moved ${old.node} -> ${w.node}` });
  }
  for (const id of was.keys()) if (!now.has(id)) out.push({ at, kind: "WorkloadRemoved", text: `${id} removed` });
  return out.map((e) => ({ generation: after.topology.generation, ...e }));
}

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

// The routes the stream does not carry; a missing one (e.g. /api/v1/identities without a CA) stays null.
const EXTRA_ROUTES = {
  routes: "/api/v1/routes",
  xds: "/api/v1/xds/clients",
  replicas: "/api/v1/replicas",
  config: "/api/v1/config",
  identities: "/api/v1/identities",
  services: "/api/v1/services",
};

const ABSENT_RETRY_MS = 30000;
const absentSince = {}; // a route that answered 404 (no CA, an older controller): asked again only now and then

async function refreshExtras() {
  await Promise.all(
    Object.entries(EXTRA_ROUTES).map(async ([name, path]) => {
      if (absentSince[name] && Date.now() - absentSince[name] < ABSENT_RETRY_MS) return;
      try {
        const response = await fetch(path, { cache: "no-store" });
        if (response.status === 404) absentSince[name] = Date.now();
        else delete absentSince[name];
        model.extras[name] = response.ok ? await response.json() : null;
      } catch (err) {
        model.extras[name] = null;
      }
    }),
  );
  schedule();
}

// -- rendering ----------------------------------------------------------------------------------------------

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  requestAnimationFrame(() => {
    pending = false;
    render();
  });
}

function setMode(mode) {
  model.mode = mode;
  const conn = document.getElementById("conn");
  conn.dataset.mode = mode;
  conn.textContent = { live: "live", polling: "polling every 1 s", reconnecting: "reconnecting", connecting: "connecting", offline: "controller unreachable" }[mode] || mode;
}

function render() {
  document.getElementById("generation").textContent = model.generation === null ? "" : `generation ${model.generation}`;
  const config = model.extras.config;
  document.getElementById("config").textContent = config ? `config ${config.revision || "-"} ${config.status || ""}` : "";
  if (model.views.topology) drawMap(model.views.topology, model.views.workloads);
  renderServices();
  renderInspector();
  renderTimeline();
  renderSecurity();
}

function el(name, attrs = {}, text) {
  const node = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function h(name, attrs = {}, ...children) {
  const node = document.createElement(name);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  for (const child of children.flat()) if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  return node;
}

export function latencyClass(us) {
  if (us === null || us === undefined) return "lat0";
  const ms = us / 1000;
  return ms < 2 ? "lat0" : ms < 10 ? "lat1" : ms < 25 ? "lat2" : "lat3";
}

function fmtMs(us) {
  if (us === null || us === undefined) return "?";
  const ms = us / 1000;
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

// One drawn line per cable: the two directions of a link share it (down when either is down).
export function cables(links) {
  const byPair = new Map();
  for (const l of links || []) {
    const [a, b] = [l.src, l.dst].sort();
    const id = `${a}-${b}`;
    const entry = byPair.get(id) || { id, a, b, rows: [] };
    entry.rows.push(l);
    byPair.set(id, entry);
  }
  return [...byPair.values()].map((c) => {
    const latencies = c.rows.map((r) => r.measured_latency_us ?? r.latency_us).filter((v) => v !== null && v !== undefined);
    const utilization = c.rows.map((r) => r.utilization).filter((v) => typeof v === "number");
    return {
      ...c,
      up: c.rows.every((r) => r.up),
      latency_us: latencies.length ? Math.max(...latencies) : null,
      measured: c.rows.some((r) => r.measured_latency_us !== null && r.measured_latency_us !== undefined),
      utilization: utilization.length ? Math.max(...utilization) : null,
    };
  });
}

function drawMap(topo, workloadsView) {
  const svg = document.getElementById("map");
  const tierOf = new Map((topo.sites || []).map((s) => [s.id, s.tier]));
  const workloads = (workloadsView && workloadsView.workloads) || [];
  const byNode = new Map();
  for (const w of workloads) if (w.node) byNode.set(w.node, [...(byNode.get(w.node) || []), w]);
  const attached = new Map(); // switch -> [{kind, row}]
  for (const host of topo.hosts || []) if (host.switch) attached.set(host.switch, [...(attached.get(host.switch) || []), { kind: "host", row: host }]);
  for (const node of topo.nodes || []) attached.set(node.switch, [...(attached.get(node.switch) || []), { kind: "node", row: node }]);

  // Layout: a row per tier (cloud on top, edge at the bottom), a box per site, a slot per switch.
  const SLOT = 70, ROW_GAP = 40, SITE_GAP = 24, MARGIN = 16;
  const rows = [];
  let y = MARGIN;
  const pos = new Map();
  let width = 0;
  const sites = [...(topo.sites || [])].sort((a, b) => a.id.localeCompare(b.id));
  const switchesOf = (site) => (topo.switches || []).filter((s) => s.site === site).sort((a, b) => a.id.localeCompare(b.id));
  const tiers = [...TIERS, ...new Set(sites.map((s) => s.tier).filter((t) => !TIERS.includes(t)))];
  const orphanSwitches = (topo.switches || []).filter((s) => !tierOf.has(s.site));
  for (const tier of tiers) {
    const tierSites = sites.filter((s) => s.tier === tier).map((s) => ({ id: s.id, switches: switchesOf(s.id) }));
    if (tier === "edge" && orphanSwitches.length) tierSites.push({ id: "(no site)", switches: orphanSwitches });
    if (!tierSites.length) continue;
    let tallest = 0;
    for (const site of tierSites) for (const sw of site.switches) {
      const items = attached.get(sw.id) || [];
      const height = items.reduce((sum, it) => sum + (it.kind === "node" ? 40 + 16 * (byNode.get(it.row.id) || []).length : 28) + 8, 0);
      tallest = Math.max(tallest, height);
    }
    const rowHeight = 70 + tallest + 20;
    let x = MARGIN + 70;
    const boxes = [];
    for (const site of tierSites) {
      const slots = site.switches.map((sw) => Math.max(1, 1) * Math.max(SLOT * 1.6, 120));
      const w = Math.max(140, slots.reduce((a, b) => a + b, 0));
      let sx = x;
      // Nodes hang above the switches of the upper tiers and below the edge's: most cables run between
      // metro and edge, and stay clear of them.
      const up = tier !== "edge";
      site.switches.forEach((sw, i) => {
        pos.set(sw.id, { x: sx + slots[i] / 2, y: up ? y + rowHeight - 50 : y + 45, up });
        sx += slots[i];
      });
      boxes.push({ id: site.id, x, y, w, h: rowHeight - 10, switches: site.switches });
      x += w + SITE_GAP;
    }
    width = Math.max(width, x);
    rows.push({ tier, y, h: rowHeight, boxes });
    y += rowHeight + ROW_GAP;
  }
  const height = Math.max(y, 200);
  svg.setAttribute("viewBox", `0 0 ${Math.max(width, 600)} ${height}`);
  svg.setAttribute("width", String(Math.max(width, 600)));
  svg.setAttribute("height", String(height));
  svg.setAttribute("preserveAspectRatio", "xMinYMin meet");

  const layers = { sites: el("g", { class: "sites" }), links: el("g", { class: "links" }), attach: el("g"), things: el("g", { class: "things" }) };
  for (const row of rows) {
    layers.sites.append(el("text", { class: "tier-label", x: MARGIN, y: row.y + 20, "data-tier": row.tier }, row.tier));
    for (const box of row.boxes) {
      const g = el("g", { class: "site", "data-site": box.id, "data-tier": row.tier });
      g.append(el("rect", { x: box.x, y: box.y, width: box.w, height: box.h, rx: 8 }));
      g.append(el("text", { x: box.x + 8, y: box.y + 14 }, box.id));
      layers.sites.append(g);
    }
  }
  for (const cable of cables(topo.links)) {
    const p = pos.get(cable.a), q = pos.get(cable.b);
    if (!p || !q) continue;
    const width = cable.utilization === null ? 3 : 2 + Math.min(1, cable.utilization) * 8;
    // Two switches in one row: bend the line so it does not run through the switches between them.
    // Bent away from the side the site's nodes hang on.
    const bend = p.y === q.y && Math.abs(p.x - q.x) > 200 ? (p.up ? 40 : -40) : 0;
    const mx = (p.x + q.x) / 2, my = (p.y + q.y) / 2 + bend;
    // Cables between tiers cross mid-way: their labels go near the lower end, where they have spread out.
    const [upper, lower] = p.y <= q.y ? [p, q] : [q, p];
    const label = p.y === q.y ? { x: mx + 4, y: my - 3 } : { x: upper.x + 0.62 * (lower.x - upper.x) + 5, y: upper.y + 0.62 * (lower.y - upper.y) };
    const path = el("path", {
      d: `M ${p.x} ${p.y} Q ${mx} ${my + bend} ${q.x} ${q.y}`,
      fill: "none",
      class: `link ${latencyClass(cable.latency_us)}`,
      "stroke-width": width,
      "data-link": cable.id,
      "data-src": cable.a,
      "data-dst": cable.b,
      "data-state": cable.up ? "up" : "down",
      "data-latency-us": cable.latency_us ?? "",
    });
    path.append(el("title", {}, `${cable.a} - ${cable.b}: ${cable.up ? "up" : "DOWN"}, ${fmtMs(cable.latency_us)}${cable.measured ? " measured" : " declared"}${cable.utilization !== null ? `, ${(cable.utilization * 100).toFixed(0)} % used` : ""}`));
    layers.links.append(path);
    layers.links.append(el("text", { class: "link-label", x: label.x, y: label.y, "data-link-label": cable.id }, cable.up ? fmtMs(cable.latency_us) : "down"));
  }
  for (const sw of topo.switches || []) {
    const p = pos.get(sw.id);
    if (!p) continue;
    let next = p.up ? p.y - 32 : p.y + 40;
    for (const item of (attached.get(sw.id) || []).sort((a, b) => a.kind.localeCompare(b.kind) || a.row.id.localeCompare(b.row.id))) {
      const wl = item.kind === "node" ? byNode.get(item.row.id) || [] : [];
      const h = item.kind === "node" ? 40 + 16 * wl.length : 28;
      const w = 104, x = p.x - w / 2;
      const ay = p.up ? next - h : next;
      next = p.up ? ay - 8 : ay + h + 8;
      layers.attach.append(el("line", { class: "attach", x1: p.x, y1: p.y, x2: p.x, y2: p.up ? ay + h : ay }));
      if (item.kind === "host") {
        const g = el("g", { class: "host", "data-host": item.row.id, "data-switch": sw.id });
        g.append(el("rect", { x, y: ay, width: w, height: h, rx: 12 }));
        g.append(el("text", { x: x + 8, y: ay + 17 }, `user ${item.row.id}`));
        layers.things.append(g);
      } else {
        const node = item.row;
        const used = wl.reduce((s, x) => s + (x.cpu_millis || 0), 0);
        const load = node.cpu_millis ? used / node.cpu_millis : 0;
        const g = el("g", { class: "node", "data-node": node.id, "data-switch": sw.id, "data-state": node.up ? "up" : "down", "data-load": load.toFixed(3) });
        g.append(el("rect", { class: "box", x, y: ay, width: w, height: h, rx: 4 }));
        g.append(el("text", { x: x + 6, y: ay + 14 }, `${node.id}${node.up ? "" : " (down)"}`));
        g.append(el("rect", { class: "load-bg", x: x + 6, y: ay + 20, width: w - 12, height: 6 }));
        g.append(el("rect", { class: "load", x: x + 6, y: ay + 20, width: (w - 12) * Math.min(1, load), height: 6 }));
        g.append(el("title", {}, `${node.id}: CPU ${used}/${node.cpu_millis} m (${(load * 100).toFixed(0)} %)`));
        wl.sort((a, b) => a.id.localeCompare(b.id)).forEach((wk, i) => {
          const wg = el("g", { class: "workload", "data-workload": wk.id, "data-service": wk.service, "data-node": node.id });
          wg.append(el("rect", { x: x + 6, y: ay + 31 + 16 * i, width: w - 12, height: 14, rx: 3, fill: serviceColour(wk.service) }));
          wg.append(el("text", { x: x + 10, y: ay + 42 + 16 * i }, wk.id));
          g.append(wg);
        });
        layers.things.append(g);
      }
    }
    const g = el("g", { class: "switch", "data-switch": sw.id, "data-dpid": sw.dpid, "data-state": sw.connected ? "connected" : "disconnected" });
    g.append(el("circle", { cx: p.x, cy: p.y, r: 18 }));
    g.append(el("text", { x: p.x, y: p.y + 4, "text-anchor": "middle" }, sw.id));
    g.append(el("title", {}, `${sw.id} (dpid ${sw.dpid})${sw.connected ? "" : ": not connected"}`));
    layers.things.append(g);
  }
  svg.replaceChildren(layers.sites, layers.links, layers.attach, layers.things);
}

const PALETTE = ["#3f6fd8", "#8e44ad", "#16a085", "#d35400", "#2c3e50", "#c0392b", "#27ae60", "#7f8c8d", "#b7950b", "#1abc9c"];
function serviceColour(name) {
  let hash = 0;
  for (const c of name) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return PALETTE[hash % PALETTE.length];
}

function siteIndex() {
  const topo = model.views.topology || {};
  const tierOf = new Map((topo.sites || []).map((s) => [s.id, s.tier]));
  const nodes = new Map((topo.nodes || []).map((n) => [n.id, n]));
  return { tierOf, nodes };
}

function renderServices() {
  const body = document.getElementById("services-body");
  const workloads = (model.views.workloads && model.views.workloads.workloads) || [];
  const replicas = (model.extras.replicas && model.extras.replicas.services) || {};
  const declared = new Map(((model.extras.services && model.extras.services.services) || []).map((s) => [s.name, s]));
  const names = [...new Set([...workloads.map((w) => w.service), ...Object.keys(replicas), ...declared.keys()])].sort();
  const users = (model.views.service_paths && model.views.service_paths.users) || [];
  const { tierOf, nodes } = siteIndex();
  const table = h("table", { id: "services-table" },
    h("tr", {}, h("th", {}, "service"), h("th", {}, "replicas"), h("th", {}, "SLO"), h("th", {}, "instances (node, site, tier)"), h("th", {}, "users' request time"), h("th", {}, "last migration")));
  const lastMigration = lastMigrations(model.events);
  for (const name of names) {
    const spec = declared.get(name) || {};
    const rep = replicas[name];
    const slo = [spec.max_latency_ms != null ? `≤ ${spec.max_latency_ms} ms from ${(spec.near || []).join(", ") || "users"}` : null,
      spec.max_request_latency_ms != null ? `request ≤ ${spec.max_request_latency_ms} ms` : null].filter(Boolean).join("; ") || "—";
    const margins = new Map((spec.instances || []).map((i) => [i.workload, i]));
    const instances = workloads.filter((w) => w.service === name).sort((a, b) => a.id.localeCompare(b.id)).map((w) => {
      const node = nodes.get(w.node);
      const site = node ? node.site : "?";
      const m = margins.get(w.id);
      const margin = m && m.margin_ms != null
        ? h("span", { class: m.margin_ms < 0 ? "bad" : "muted", "data-margin": String(m.margin_ms) }, ` ${m.worst_latency_ms} ms from its users, margin ${m.margin_ms} ms`)
        : null;
      return h("div", { "data-instance": w.id, "data-node": w.node ?? "" }, `${w.id} on ${w.node ?? "(none)"} `, h("span", { class: "muted" }, `${site}, ${tierOf.get(site) || "?"}`), margin);
    });
    const times = users.filter((u) => u.service === name).map((u) => {
      const over = spec.max_request_latency_ms != null && u.request_ms !== null && u.request_ms > spec.max_request_latency_ms;
      return h("div", { class: over ? "bad" : "" }, `${u.host}: ${u.request_ms === null ? "unreachable" : `${u.request_ms} ms`}`);
    });
    const repText = rep ? `${rep.placed}/${rep.replicas}${rep.pending ? ` (pending: ${rep.pending})` : ""}` : spec.replicas != null ? `?/${spec.replicas}` : "—";
    table.append(h("tr", { "data-service": name }, h("td", {}, name), h("td", { class: rep && rep.placed < rep.replicas ? "warn" : "" }, repText), h("td", {}, slo), h("td", {}, instances), h("td", {}, times.length ? times : h("span", { class: "muted" }, "—")),
      h("td", { class: "reason" }, lastMigration.get(name) || h("span", { class: "muted" }, "—"))));
  }
  body.replaceChildren(table);
}

function fillSelect(select, values) {
  const current = select.value;
  const existing = [...select.options].map((o) => o.value).join("\n");
  if (existing !== values.join("\n")) select.replaceChildren(...values.map((v) => h("option", { value: v }, v)));
  if (values.includes(current)) select.value = current;
}

function renderInspector() {
  const topo = model.views.topology;
  if (!topo) return;
  const callerSelect = document.getElementById("inspect-caller");
  const serviceSelect = document.getElementById("inspect-service");
  const workloads = (model.views.workloads && model.views.workloads.workloads) || [];
  fillSelect(callerSelect, [...(topo.hosts || []).map((x) => x.id).sort(), ...workloads.map((w) => w.id).sort()]);
  fillSelect(serviceSelect, [...new Set(workloads.map((w) => w.service))].sort());
  const caller = callerSelect.value, service = serviceSelect.value;
  const body = document.getElementById("inspect-body");
  if (!caller || !service) {
    body.replaceChildren(h("p", { class: "muted" }, "pick a caller and a service"));
    return;
  }
  const host = (topo.hosts || []).find((x) => x.id === caller);
  const callerWorkload = workloads.find((w) => w.id === caller);
  const callerNode = callerWorkload ? (topo.nodes || []).find((n) => n.id === callerWorkload.node) : null;
  const fromSwitch = host ? host.switch : callerNode ? callerNode.switch : null;
  const endpoint = host ? host.id : callerNode ? callerNode.id : null;
  const paths = model.views.service_paths || { calls: [] };
  const call = (paths.calls || []).find((c) => c.service === service && c.from_switch === fromSwitch);
  const targets = call ? call.instances : workloads.filter((w) => w.service === service).map((w) => ({ workload: w.id, node: w.node, round_trip_ms: null }));
  const routes = (model.extras.routes && model.extras.routes.routes) || [];
  const cableLatency = new Map(cables(topo.links).map((c) => [c.id, c]));
  const out = [h("p", {}, `${caller} at switch ${fromSwitch ?? "?"} calls ${service}: `,
    call ? `${targets.length} instance(s) in its nearest priority level, ${call.calls_per_request} call(s) per user request` : h("span", { class: "muted" }, "no call of the call graph from there; every instance listed"))];
  for (const target of targets) {
    const route = routes.find((r) => r.src === endpoint && r.dst === target.node);
    const section = h("div", { class: "call", "data-target": target.workload });
    section.append(h("h2", {}, `→ ${target.workload} on ${target.node}`, target.round_trip_ms != null ? h("span", { class: "muted" }, ` round trip ${target.round_trip_ms} ms`) : ""));
    if (route) {
      const hops = h("div", { class: "hops" }, h("span", { class: "hop" }, endpoint));
      for (const hop of route.hops) {
        const id = [hop.switch, hop.next].sort().join("-");
        const c = cableLatency.get(id);
        hops.append(h("span", { class: "hop", "data-hop": hop.switch }, hop.switch));
        hops.append(h("span", { class: c && !c.up ? "arrow bad" : "arrow" }, `— ${c ? fmtMs(c.latency_us) : "?"} →`));
      }
      const last = route.path[route.path.length - 1];
      hops.append(h("span", { class: "hop", "data-hop": last }, last), h("span", { class: "arrow" }, "→"), h("span", { class: "hop" }, target.node));
      section.append(hops, h("div", { class: "muted" }, `one way ${fmtMs(route.latency_us)} over ${route.path.length} switch(es)`));
    } else section.append(h("div", { class: "muted" }, "no route known between them yet"));
    section.append(identityAndXds([caller, target.workload]));
    out.push(section);
  }
  body.replaceChildren(...out);
}

function identityAndXds(ids) {
  const identities = model.extras.identities;
  const xds = model.extras.xds;
  const table = h("table", {}, h("tr", {}, h("th", {}, "end"), h("th", {}, "SPIFFE id"), h("th", {}, "certificate expires in"), h("th", {}, "sidecar xDS")));
  for (const id of ids) {
    const svid = identities ? (identities.identities || []).find((r) => r.subject === id) : null;
    const client = xds && xds.nodes ? xds.nodes[id] : null;
    let xdsText = "not connected";
    if (client && client.streams) {
      // "current": the sidecar runs this type's current content (ACKed, nothing left to send).
      const types = Object.entries(client.types || {}).map(([t, s]) => `${t} ${s.current && s.acks ? "ACKed" : s.pending_nonce ? "pending" : s.last_nack ? "NACKed" : "not current"}`);
      xdsText = `${client.mode || ""} ${client.in_sync ? "in sync" : "behind"}; ${types.join(", ")}`;
    }
    if (xds && (xds.not_ready || []).includes(id)) xdsText += " (not ready)";
    table.append(h("tr", { "data-end": id }, h("td", {}, id),
      h("td", {}, svid ? svid.spiffe_id : identities ? "none" : h("span", { class: "muted" }, "no CA")),
      h("td", { class: svid ? expiryClass(svid) : "" }, svid ? fmtDuration(svid.expires_in_s) : "—"),
      h("td", {}, xds ? xdsText : h("span", { class: "muted" }, "—"))));
  }
  return table;
}

// Per service, the text of its latest MigrationStarted entry (which says placement's reason), if any.
export function lastMigrations(events) {
  const out = new Map();
  for (const e of events) if (e.kind === "MigrationStarted" && e.service) out.set(e.service, e.text);
  return out;
}

// Measurements come about once a second: shown only on request, so the moves and failures stay in view.
const ROUTINE = new Set(["LinkLatencyMeasured"]);
// The timeline's kind filter: entries from outside the model, by where they come from (docs/dashboard-ui.md).
export const KIND_GROUPS = {
  placement: new Set(["MigrationStarted", "MigrationConverged", "MigrationCompleted", "MigrationRolledBack", "FailoverStarted", "Unschedulable"]),
  xds: new Set(["XdsNack"]),
  certificates: new Set(["CertificateIssued", "CertificateRotated", "CertificateRevoked"]),
};
const SECURITY_KINDS = new Set(["XdsNack", "CertificateRevoked"]);

export function inGroup(kind, group) {
  if (group === "all") return true;
  if (group === "model") return !Object.values(KIND_GROUPS).some((kinds) => kinds.has(kind));
  return KIND_GROUPS[group]?.has(kind) ?? false;
}

function renderTimeline() {
  const list = document.getElementById("timeline-list");
  const all = document.getElementById("timeline-all").checked;
  const group = document.getElementById("timeline-kind").value || "all";
  const shown = model.events.filter((e) => (all || !ROUTINE.has(e.kind)) && inGroup(e.kind, group));
  const items = shown.reverse().map((e) =>
    h("li", { "data-kind": e.kind, "data-generation": e.generation ?? "" },
      h("time", {}, new Date(e.at * 1000).toLocaleTimeString()), h("span", { class: "kind" }, e.kind), e.text));
  list.replaceChildren(...(items.length ? items : [h("li", { class: "muted" }, "no events yet")]));
}

function fmtDuration(s) {
  if (s < 0) return `expired ${fmtDuration(-s)} ago`;
  if (s < 120) return `${Math.round(s)} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

// Red: expired. Orange: past its rotation time and not renewed yet (rotation is due at a fraction of the
// lifetime, so a certificate that ages past it is one the CA failed to rotate). Green: otherwise.
function expiryClass(row) {
  return row.expires_in_s < 0 ? "bad" : row.rotates_at * 1000 < Date.now() ? "warn" : "good";
}

export function byExpiry(rows) {
  return [...rows].sort((a, b) => a.expires_in_s - b.expires_in_s || a.subject.localeCompare(b.subject));
}

function recentSecurityEvents() {
  const recent = model.events.filter((e) => SECURITY_KINDS.has(e.kind)).slice(-20).reverse();
  const list = h("ol", { id: "security-events" }, ...recent.map((e) =>
    h("li", { "data-kind": e.kind }, h("time", {}, new Date(e.at * 1000).toLocaleTimeString()), h("span", { class: "kind" }, e.kind), e.text)));
  return [h("h3", {}, "recent NACKs and revocations"), recent.length ? list : h("p", { class: "muted" }, "none on the timeline")];
}

function renderSecurity() {
  const body = document.getElementById("security-body");
  const identities = model.extras.identities;
  if (!identities) {
    body.replaceChildren(h("p", { class: "muted" }, "no certificate authority: the controller runs without --pki-dir"), ...recentSecurityEvents());
    return;
  }
  const table = h("table", { id: "certificates" }, h("tr", {}, h("th", {}, "subject"), h("th", {}, "SPIFFE id"), h("th", {}, "serial"), h("th", {}, "expires in"), h("th", {}, "rotates at")));
  for (const r of byExpiry(identities.identities || [])) {
    table.append(h("tr", { "data-subject": r.subject, "data-expires-in": r.expires_in_s },
      h("td", {}, r.subject), h("td", {}, r.spiffe_id), h("td", { class: "muted" }, r.serial),
      h("td", { class: expiryClass(r) }, fmtDuration(r.expires_in_s)),
      h("td", { class: "muted" }, new Date(r.rotates_at * 1000).toLocaleString())));
  }
  const revoked = (identities.revoked_serials || []).length + (identities.revoked_identities || []).length;
  body.replaceChildren(h("p", {}, `trust domain ${identities.trust_domain}; ${(identities.identities || []).length} certificates, earliest expiry first; ${revoked} revoked`), table, ...recentSecurityEvents());
}

// -- start ----------------------------------------------------------------------------------------------------

function showTab(name) {
  for (const b of document.querySelectorAll("#tabs button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const p of document.querySelectorAll(".panel")) p.classList.toggle("active", p.id === name);
  if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
}

function start() {
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  const initial = location.hash.slice(1);
  if (document.getElementById(initial)?.classList.contains("panel")) showTab(initial);
  document.getElementById("inspect-form").addEventListener("change", schedule);
  document.getElementById("timeline-all").addEventListener("change", schedule);
  document.getElementById("timeline-kind").addEventListener("change", schedule);
  window.edgectlModel = model; // for a look from the browser's console, and for tests
  connect();
  refreshExtras();
  setInterval(refreshExtras, EXTRAS_MS);
}

if (typeof document !== "undefined") start();
