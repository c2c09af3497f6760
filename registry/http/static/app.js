/* The registry's web page (issue 16): the pool and each group's ring, live.
 *
 * Plain ES2020, no build step, nothing fetched from outside: the front serves it under
 * `Content-Security-Policy: default-src 'self'`, so there is no inline script or style here;
 * colours are set through the CSSOM (element.style) or SVG presentation attributes, which that
 * policy allows.  URLs are relative ("v1/pool", "ui/app.js") so the page also works behind a
 * proxy that mounts the registry under a prefix.
 *
 * Liveness is the HTTP API's blocking query (`?index=N&wait=30s`): one request waits on the
 * server until the data changes, so a change shows within a round trip without polling.  The
 * DOM ids, classes and data attributes are a contract with the browser tests (tests/ui/):
 * `body[data-view][data-index]` is set after each render so a test can wait for a given index.
 */
"use strict";
(() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const WAIT = "30s";
  const REQUEST_LIMIT_MS = 40000; // WAIT plus slack: longer than that, the connection is dead
  const LEGEND_MAX = 50; // the legend shows at most the 50 largest shares (or filter matches)
  const IDS_SHOWN = 5; // ids named per kind in one timeline line before "+N more"
  const C = 200; // centre of the 400 x 400 viewBox
  const R_OUT = 190;
  const R_IN = 132;
  const R_MARK = (R_OUT + R_IN) / 2;

  const main = document.getElementById("main");
  const statusEl = document.getElementById("status");
  const selfEl = document.getElementById("self");

  /** The view on screen; replaced (and its requests aborted) on every route change. */
  let current = null;

  // Each page open in a tab holds one of the browser's six HTTP/1.1 connections to the registry
  // with its blocking query; a tab in the background does not need to be live, so it lets go of
  // it (`hidden` aborts the query) and asks again, at once, when shown.
  let hidden = new AbortController();
  const onShow = [];
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) {
      hidden.abort();
    } else {
      hidden = new AbortController();
      for (const wake of onShow.splice(0)) wake();
    }
  });

  function whenShown(signal) {
    if (!document.hidden) return Promise.resolve();
    return new Promise((resolve) => {
      onShow.push(resolve);
      signal.addEventListener("abort", resolve, { once: true });
    });
  }

  // ---- small helpers -------------------------------------------------------------------

  /** An HTML element: attrs (class, data-*, aria-*, booleans as true) and children (strings become text). */
  function h(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    setAttrs(e, attrs);
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  function svg(tag, attrs, ...kids) {
    const e = document.createElementNS(SVG_NS, tag);
    setAttrs(e, attrs);
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  function setAttrs(e, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === false || v === null || v === undefined) continue;
      e.setAttribute(k, v === true ? "" : String(v));
    }
  }

  function sleep(ms, signal) {
    return new Promise((resolve) => {
      const t = setTimeout(resolve, ms);
      signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
    });
  }

  /** A share as the page prints it everywhere: percent with 2 decimals, "33.41 %". */
  function pct(x) {
    return (x * 100).toFixed(2) + " %";
  }

  function rtt(ms) {
    if (typeof ms !== "number") return "-";
    return (ms < 100 ? ms.toFixed(1) : String(Math.round(ms))) + " ms";
  }

  /** Twelve well-separated colours for small groups, where a hash's hues would often land close. */
  const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#17becf", "#bcbd22", "#6b6ecf"];

  /**
   * Each service's colour (id -> CSS colour) from the server's stable index (`color`, a hash of
   * the id).  Up to 12 services: a palette slot, the hash's own slot when free, else the next free
   * one (ids in order): distinct, and a service keeps its colour through most joins and leaves.
   * More services: the hash as a hue, with three lightness levels separating hues that land close.
   * Text always names a colour's owner (legend, arc titles), so colour never carries meaning alone.
   */
  function colours(services) {
    const out = new Map();
    if (services.length <= PALETTE.length) {
      const taken = new Set();
      for (const s of services) {
        let slot = Math.abs(Math.trunc(s.color || 0)) % PALETTE.length;
        while (taken.has(slot)) slot = (slot + 1) % PALETTE.length;
        taken.add(slot);
        out.set(s.id, PALETTE[slot]);
      }
      return out;
    }
    for (const s of services) {
      const n = Math.abs(Math.trunc(s.color || 0));
      out.set(s.id, `hsl(${n % 360}, 62%, ${[40, 52, 64][Math.trunc(n / 7) % 3]}%)`);
    }
    return out;
  }

  function groupHref(group) {
    return "#/group/" + encodeURIComponent(group);
  }

  function setStatus(word) {
    statusEl.textContent = word;
    statusEl.className = "st-" + word;
  }

  /** Marks the render done: tests wait on body[data-index] reaching the index they expect. */
  function rendered(view, index) {
    document.body.dataset.view = view;
    document.body.dataset.index = index === null || index === undefined ? "" : String(index);
  }

  function errorLine(body, status) {
    if (body && typeof body.error === "string") return body.error;
    return `HTTP ${status}`;
  }

  // ---- requests ------------------------------------------------------------------------

  /** One GET: aborted with the view, and after `limitMs` (a blocking query answers by its wait,
   * so a request silent for longer hangs on a dead connection and is given up, then retried). */
  async function getJSON(url, signal, limitMs = REQUEST_LIMIT_MS, also = null) {
    const ctl = new AbortController();
    const stop = () => ctl.abort();
    signal.addEventListener("abort", stop, { once: true });
    if (also) also.addEventListener("abort", stop, { once: true });
    const timer = setTimeout(stop, limitMs);
    try {
      const r = await fetch(url, { signal: ctl.signal, cache: "no-store", headers: { Accept: "application/json" } });
      let body = null;
      try {
        body = await r.json();
      } catch (_) {
        body = null;
      }
      return { ok: r.ok, status: r.status, body, header: r.headers.get("X-Registry-Index") };
    } finally {
      clearTimeout(timer);
      signal.removeEventListener("abort", stop);
      if (also) also.removeEventListener("abort", stop);
    }
  }

  function indexOf(res) {
    if (res.body && (typeof res.body.index === "number" || typeof res.body.index === "string")) {
      return String(res.body.index);
    }
    return res.header === null ? null : res.header;
  }

  /**
   * The blocking-query loop of one view: ask `url`, render, ask again with the index just shown,
   * until the view is left (its AbortController fires).  A network failure, a 5xx or a 429 shows
   * "reconnecting" and retries after a backoff (0.5 s doubling to 5 s); an API error (a 404 for a
   * group with no live service) is rendered and the loop keeps waiting on that index, so the page
   * fills in when the group appears.  A server that answers at once with the same index (or with
   * none) is paced (one request a second; four for a 404) rather than spun on.
   */
  async function follow(v, url, onData, onError) {
    const signal = v.ctl.signal;
    const sep = url.includes("?") ? "&" : "?";
    let index = null;
    let backoff = 0;
    while (!signal.aborted) {
      if (index !== null) await whenShown(signal); // the first answer is always drawn
      if (signal.aborted) return;
      const started = performance.now();
      const gone = index === null ? null : hidden.signal;
      let res = null;
      try {
        const u = index === null ? url : `${url}${sep}index=${encodeURIComponent(index)}&wait=${WAIT}`;
        res = await getJSON(u, signal, REQUEST_LIMIT_MS, gone);
      } catch (_) {
        res = null;
      }
      if (signal.aborted) return;
      if (res === null && gone !== null && gone.aborted) continue; // hidden: wait to be shown, then ask
      if (res === null || res.status >= 500 || res.status === 429 || (!res.ok && res.body === null)) {
        setStatus("reconnecting");
        // Indexes are one registry's: the one answering next may be another, or this one restarted
        // (numbering from the start again, maybe up to the very index held here with other content).
        // Blocking on the old index could then wait a whole `wait`: ask afresh instead.
        index = null;
        backoff = Math.min(backoff ? backoff * 2 : 500, 5000);
        await sleep(backoff, signal);
        continue;
      }
      backoff = 0;
      setStatus("live");
      let next = indexOf(res);
      // A 404 without an index is a group this registry does not know: its index is 0, and
      // `?index=0` waits for the group to appear.
      if (next === null && res.status === 404) next = "0";
      try {
        if (res.ok) await onData(res.body, next);
        else await onError(res.body, next, res.status);
      } catch (err) {
        // An answer this page cannot draw (a server newer than the page?) must not end the loop:
        // say so once in the console and keep following from the next answer.
        console.error("registry page: could not render", url, err);
      }
      if (signal.aborted) return;
      if (next === null || (next === index && performance.now() - started < 200)) {
        // An emptied group's 404 carries no index to block on: ask again soon (a 404 is cheap).
        await sleep(res.status === 404 ? 250 : 1000, signal);
      }
      index = next;
    }
  }

  // ---- routing -------------------------------------------------------------------------

  function route(focus) {
    const hash = location.hash;
    if (current && !hash.startsWith("#/") && hash !== "") return; // an in-page anchor, not a view
    if (current) current.ctl.abort();
    const m = /^#\/group\/(.+)$/.exec(hash);
    if (m) {
      let group = m[1];
      try {
        group = decodeURIComponent(group);
      } catch (_) { /* a malformed escape: take the text as it is */ }
      current = showGroup(group);
    } else {
      current = showOverview();
    }
    if (focus) main.focus();
  }

  // ---- overview ------------------------------------------------------------------------

  const MEMBER_COLUMNS = [
    ["status", "Status"], ["health", "Health"], ["addr", "Gossip address"], ["role", "Role"],
    ["group", "Group"], ["service", "Serves at"], ["rtt", "RTT"], ["protocol", "Protocol"], ["tags", "Tags"],
  ];

  /** Tags the table already shows in their own column: left out of the compact tags cell (the
   * cell's title still lists every tag). */
  const SHOWN_TAGS = new Set(["group", "addr", "role", "health", "health_note"]);

  function showOverview() {
    const v = { kind: "overview", ctl: new AbortController() };
    document.title = "registry: pool";
    v.error = h("p", { id: "error", class: "error", role: "alert", hidden: true });
    v.groups = h("ul", { id: "groups", class: "groups" });
    v.summary = h("p", { id: "member-summary", class: "muted" });
    v.tbody = h("tbody");
    const head = h("tr", {}, h("th", { scope: "col" }, "Name"),
      ...MEMBER_COLUMNS.map(([, label]) => h("th", { scope: "col" }, label)));
    main.replaceChildren(
      h("h1", { id: "page-title" }, "Pool"),
      v.error,
      h("section", { "aria-labelledby": "groups-h" }, h("h2", { id: "groups-h" }, "Groups"), v.groups),
      h("section", { "aria-labelledby": "members-h" },
        h("h2", { id: "members-h" }, "Members"), v.summary,
        h("div", { class: "scroll", tabindex: "0", role: "region", "aria-labelledby": "members-h" },
          h("table", { id: "members" }, h("thead", {}, head), v.tbody))),
    );
    follow(v, "v1/pool", (body, index) => renderPool(v, body, index), (body, index, status) => {
      v.error.textContent = errorLine(body, status);
      v.error.hidden = false;
      rendered("overview", index);
    });
    return v;
  }

  function renderPool(v, d, index) {
    v.error.hidden = true;
    if (typeof d.self === "string") selfEl.textContent = d.self;
    const groups = Array.isArray(d.groups) ? d.groups : [];
    const members = Array.isArray(d.members) ? d.members : [];

    const gl = document.createDocumentFragment();
    for (const g of groups) {
      const extra = [];
      if (g.ttl) extra.push(`${g.ttl} ttl`);
      if (g.critical) extra.push(`${g.critical} critical, off the ring`);
      gl.append(h("li", { "data-group": g.name },
        h("a", { href: groupHref(g.name) }, g.name), " ",
        h("span", { class: "count" }, String(g.services)),
        ` on the ring${extra.length ? " (" + extra.join(", ") + ")" : ""}`));
    }
    if (!groups.length) gl.append(h("li", { class: "muted" }, "no groups yet"));
    v.groups.replaceChildren(gl);

    const counts = {};
    for (const m of members) counts[m.status] = (counts[m.status] || 0) + 1;
    const ttl = groups.reduce((sum, g) => sum + (g.ttl || 0), 0);
    v.summary.textContent = `${members.length} gossip member${members.length === 1 ? "" : "s"}: ` +
      (Object.entries(counts).map(([k, n]) => `${n} ${k}`).join(", ") || "none") +
      (ttl ? `. The ${ttl} TTL service${ttl === 1 ? "" : "s"} (registered over HTTP, not gossiping) are on their groups' pages.` : "");

    const rows = document.createDocumentFragment();
    for (const m of members) rows.append(memberRow(m, d.self));
    v.tbody.replaceChildren(rows);
    rendered("overview", index);
  }

  function memberRow(m, self) {
    const name = h("th", { scope: "row", class: "name" }, m.name);
    if (m.name === self) name.append(" ", h("span", { class: "badge" }, "this registry"));
    const status = h("td", { class: "status" }, h("span", { class: "dot st-" + m.status, "aria-hidden": "true" }), m.status);
    const health = h("td", { class: "health" });
    if (m.health && m.status !== "left" && m.status !== "failed") { // a gone member's last word is not its health
      health.append(h("span", { class: "chip h-" + m.health }, m.health));
      if (m.health_note) health.append(h("span", { class: "note" }, " " + m.health_note));
    } else {
      health.textContent = "-";
    }
    const group = h("td", { class: "group" }, m.group ? h("a", { href: groupHref(m.group) }, m.group) : "-");
    const tags = Object.entries(m.tags || {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    const full = tags.map(([k, val]) => `${k}=${val}`).join(" ");
    const compact = tags.filter(([k]) => !SHOWN_TAGS.has(k)).map(([k, val]) => `${k}=${val.length > 24 ? val.slice(0, 23) + "…" : val}`).join(" ");
    return h("tr", { "data-name": m.name }, name, status, health,
      h("td", { class: "addr" }, m.addr || "-"),
      h("td", { class: "role" }, m.role || "-"),
      group,
      h("td", { class: "service" }, m.service_addr || "-"),
      h("td", { class: "rtt num" }, m.name === self ? "-" : rtt(m.rtt_ms)),
      h("td", { class: "protocol num" }, m.protocol === undefined || m.protocol === null ? "-" : String(m.protocol)),
      h("td", { class: "tags", title: full }, compact || "-"));
  }

  // ---- group page ----------------------------------------------------------------------

  function showGroup(group) {
    const v = { kind: "group", group, ctl: new AbortController(), data: null, filter: "",
      lookup: null, ownerIds: [], keyPos: null, keyArc: null, lookupSeq: 0 };
    document.title = `registry: ${group}`;
    v.error = h("p", { id: "error", class: "error", role: "alert", hidden: true });
    v.algorithm = h("span", { id: "algorithm" }, "…");
    v.version = h("span", { id: "version" }, "…");
    v.count = h("span", { id: "service-count" }, "…");
    v.arcs = svg("g", { id: "arcs" });
    v.marker = svg("g", { id: "marker-layer" });
    v.centre = svg("text", { x: C, y: C, class: "centre", "text-anchor": "middle", "dominant-baseline": "middle" });
    v.svg = svg("svg", { id: "ring", viewBox: "0 0 400 400", role: "img", "aria-labelledby": "ring-title" },
      svg("title", { id: "ring-title" }, `The ring of group ${group}: each service's arcs of the key space, clockwise from the top`),
      svg("circle", { cx: C, cy: C, r: (R_OUT + R_IN) / 2, class: "track", "stroke-width": R_OUT - R_IN }),
      v.arcs, v.marker, v.centre); // the centre text last: drawn over the key's spoke
    v.caption = h("figcaption", { class: "muted" });

    v.key = h("input", { id: "key", name: "key", type: "text", autocomplete: "off", spellcheck: "false" });
    v.n = h("input", { id: "count", name: "n", type: "number", min: "1", max: "1000", value: "3", inputmode: "numeric" });
    v.lookupError = h("p", { id: "lookup-error", class: "error", role: "alert", hidden: true });
    v.owners = h("ol", { id: "owners", "aria-live": "polite", "aria-label": "owners of the key" });
    // method "dialog": outside a dialog a submission goes nowhere, so even a submit the handler
    // below missed can never navigate away (and drop the #/group route).
    const form = h("form", { id: "lookup", role: "search", method: "dialog" },
      h("span", { class: "field key-field" }, h("label", { for: "key" }, "Key"), v.key),
      h("span", { class: "field" }, h("label", { for: "count" }, "Owners (n)"), v.n),
      h("button", { type: "submit" }, "Look up"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const key = v.key.value;
      if (key === "") {
        showLookupError(v, "type a key to look up");
        return;
      }
      if (key === "." || key === "..") {
        // A browser resolves a path segment "." or ".." (even as %2E) before sending: no URL can carry it.
        showLookupError(v, `the key "${key}" cannot travel in a URL path from a browser; ask Match over gRPC or curl`);
        return;
      }
      v.lookup = { key, n: v.n.value.trim() || "3" };
      lookup(v);
    });

    v.filterBox = h("input", { id: "filter", type: "search", autocomplete: "off", placeholder: "id or address" });
    v.filterBox.addEventListener("input", () => { v.filter = v.filterBox.value.trim().toLowerCase(); renderLegend(v); });
    v.legendNote = h("p", { id: "legend-note", class: "muted" });
    v.legend = h("ol", { id: "legend", class: "legend" });
    v.offRing = h("p", { id: "off-ring", class: "off-ring", hidden: true });
    v.timeline = h("ol", { id: "timeline", class: "timeline" });

    main.replaceChildren(
      h("p", { class: "crumbs" }, h("a", { href: "#/" }, "← Pool")),
      h("h1", { id: "group-name" }, group),
      h("p", { class: "meta" }, "Ring algorithm ", v.algorithm, " · version ", v.version, " · ",
        v.count, " services on the ring"),
      v.error,
      h("div", { class: "group-layout" },
        h("figure", { class: "ringfig" }, v.svg, v.caption),
        h("div", { class: "side" },
          h("section", { "aria-labelledby": "lookup-h" }, h("h2", { id: "lookup-h" }, "Who owns a key"),
            form, v.lookupError, v.owners),
          h("section", { "aria-labelledby": "legend-h" }, h("h2", { id: "legend-h" }, "Services and their shares"),
            h("p", { class: "filter" }, h("label", { for: "filter" }, "Filter"), v.filterBox),
            v.legendNote, v.legend, v.offRing),
          h("section", { "aria-labelledby": "timeline-h" }, h("h2", { id: "timeline-h" }, "Recent changes"),
            v.timeline))),
    );
    if (selfEl.textContent === "…") fillSelf(v);
    follow(v, `v1/ring/${encodeURIComponent(group)}`, (body, index) => renderRing(v, body, index),
      (body, index, status) => renderRingError(v, body, index, status));
    return v;
  }

  /** A group page opened directly has not seen the pool: ask once who answers, for the header. */
  async function fillSelf(v) {
    try {
      const res = await getJSON("v1/pool", v.ctl.signal);
      if (res.ok && res.body && typeof res.body.self === "string") selfEl.textContent = res.body.self;
    } catch (_) { /* the header keeps its placeholder */ }
  }

  async function renderRing(v, d, index) {
    v.data = d;
    v.error.hidden = true;
    v.algorithm.textContent = d.algorithm;
    v.version.textContent = String(d.version);
    v.count.textContent = String(d.services.filter(onRing).length);
    drawArcs(v, d);
    renderLegend(v);
    renderOffRing(v);
    renderTimeline(v, d.timeline || []);
    applyHighlight(v);
    if (v.lookup) await lookup(v); // owners may have moved with the ring: ask again before saying "rendered"
    rendered("group", index);
  }

  function renderRingError(v, body, index, status) {
    v.data = null;
    v.error.textContent = errorLine(body, status);
    v.error.hidden = false;
    v.count.textContent = "0";
    if (v.algorithm.textContent === "…") v.algorithm.textContent = "-";
    v.version.textContent = "-";
    v.arcs.replaceChildren();
    v.marker.replaceChildren();
    v.centre.textContent = "waiting for a service…"; // the loop keeps watching the group
    v.caption.textContent = "";
    v.legend.replaceChildren();
    v.legendNote.textContent = "";
    v.offRing.hidden = true;
    v.owners.replaceChildren();
    v.ownerIds = [];
    rendered("group", index);
  }

  function point(frac, r) {
    const a = frac * 2 * Math.PI;
    return `${(C + r * Math.sin(a)).toFixed(2)} ${(C - r * Math.cos(a)).toFixed(2)}`;
  }

  /** The annular sector [a, b) of the circle (fractions, b may pass 1 for the wrapping run). */
  function arcPath(a, b, rOut = R_OUT, rIn = R_IN) {
    if (b - a >= 1 - 1e-9) { // one run holds the whole circle: two half rings
      return `M${point(0, rOut)}A${rOut} ${rOut} 0 1 1 ${point(0.5, rOut)}A${rOut} ${rOut} 0 1 1 ${point(0, rOut)}Z` +
        `M${point(0, rIn)}A${rIn} ${rIn} 0 1 0 ${point(0.5, rIn)}A${rIn} ${rIn} 0 1 0 ${point(0, rIn)}Z`;
    }
    const large = b - a > 0.5 ? 1 : 0;
    return `M${point(a, rOut)}A${rOut} ${rOut} 0 ${large} 1 ${point(b, rOut)}` +
      `L${point(b, rIn)}A${rIn} ${rIn} 0 ${large} 0 ${point(a, rIn)}Z`;
  }

  /** One path per merged run the server sent (at most its 1,440 slices), built in one pass. */
  function drawArcs(v, d) {
    const services = d.services;
    const runs = (d.arcs && d.arcs.runs) || [];
    const frag = document.createDocumentFragment();
    v.colours = colours(services.filter(onRing));
    for (let i = 0; i < runs.length; i++) {
      const [start, owner] = runs[i];
      const end = i + 1 < runs.length ? runs[i + 1][0] : runs[0][0] + 1;
      const s = services[owner];
      if (!s) continue;
      frag.append(svg("path", { class: "arc", "data-service": s.id, d: arcPath(start, end), fill: v.colours.get(s.id) || "#8c959f" },
        svg("title", {}, `${s.id}: ${pct(s.share)} of the keys`)));
    }
    v.arcs.replaceChildren(frag);
    v.svg.classList.toggle("many", runs.length > 240);
    v.centre.textContent = `${services.length} service${services.length === 1 ? "" : "s"}`;
    v.caption.textContent = d.arcs && d.arcs.exact === false
      ? `Each service's arcs, clockwise from the top; a ring this large is drawn in ${runs.length} merged slices (each slice in the colour of its owner), the shares are exact.`
      : "Each service's arcs of the key space, clockwise from the top, drawn exactly.";
  }

  /** The server lists every live member of the group; a critical one is held off the ring
   * (`on_ring: false`, share 0): it has no arc, so it is not in the circle's legend either. */
  function onRing(s) {
    return s.on_ring !== false;
  }

  function renderOffRing(v) {
    const off = v.data ? v.data.services.filter((s) => !onRing(s)) : [];
    v.offRing.hidden = off.length === 0;
    v.offRing.textContent = off.length
      ? "Held off the ring: " + off.slice(0, 20).map((s) => `${s.id} (${s.health || "unknown"}${s.health_note ? ": " + s.health_note : ""})`).join(", ") +
        (off.length > 20 ? ` and ${off.length - 20} more` : "")
      : "";
  }

  function renderLegend(v) {
    const d = v.data;
    if (!d) return;
    const all = d.services.filter(onRing).sort((a, b) => b.share - a.share || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    const f = v.filter;
    const matching = f ? all.filter((s) => s.id.toLowerCase().includes(f) || String(s.addr || "").toLowerCase().includes(f)) : all;
    const shown = matching.slice(0, LEGEND_MAX);
    const frag = document.createDocumentFragment();
    for (const s of shown) {
      const sw = h("span", { class: "swatch", "aria-hidden": "true" });
      sw.style.backgroundColor = v.colours.get(s.id) || "#8c959f";
      const title = (s.addr ? `${s.id} at ${s.addr}` : s.id) + (s.health_note ? ` (${s.health_note})` : "");
      const li = h("li", { "data-service": s.id, title }, sw,
        h("span", { class: "name" }, s.id),
        h("span", { class: "share" }, pct(s.share)),
        h("span", { class: "health" + (s.health ? " chip h-" + s.health : "") }, s.health || "-"));
      if (s.kind === "ttl") li.append(h("span", { class: "kind" }, "ttl"));
      frag.append(li);
    }
    v.legend.replaceChildren(frag);
    if (f) {
      v.legendNote.textContent = `${matching.length} of ${all.length} services match` +
        (matching.length > LEGEND_MAX ? `; the ${LEGEND_MAX} largest shown` : "");
    } else {
      v.legendNote.textContent = all.length > LEGEND_MAX
        ? `The ${LEGEND_MAX} largest of ${all.length} shares; filter to find the others.`
        : "Largest share first.";
    }
  }

  function idList(verb, ids) {
    if (!ids || !ids.length) return null;
    const named = ids.slice(0, IDS_SHOWN).join(", ");
    return `${verb} ${named}${ids.length > IDS_SHOWN ? ` +${ids.length - IDS_SHOWN} more` : ""}`;
  }

  function renderTimeline(v, entries) {
    const frag = document.createDocumentFragment();
    for (const e of entries) {
      const when = new Date(e.at_ms);
      const what = [idList("joined", e.joined), idList("left", e.left), idList("updated", e.updated)]
        .filter(Boolean).join("; ") || "no member change";
      frag.append(h("li", { "data-version": e.version },
        h("time", { datetime: when.toISOString() }, when.toLocaleTimeString()),
        ` v${e.version} `, h("span", { class: "what" }, what),
        " · keys moved ", h("span", { class: "moved" }, typeof e.moved === "number" ? pct(e.moved) : "...")));
    }
    if (!entries.length) frag.append(h("li", { class: "muted" }, "no change seen yet"));
    v.timeline.replaceChildren(frag);
  }

  // ---- key lookup ----------------------------------------------------------------------

  function showLookupError(v, text) {
    v.lookupError.textContent = text;
    v.lookupError.hidden = false;
    v.owners.replaceChildren();
    v.ownerIds = [];
    v.keyPos = null;
    v.keyArc = null;
    applyHighlight(v);
  }

  /** Asks the server who owns the key (its answer equals Match's), then marks the owners' arcs. */
  async function lookup(v) {
    const { key, n } = v.lookup;
    const seq = ++v.lookupSeq;
    let res;
    try {
      res = await getJSON(`v1/ring/${encodeURIComponent(v.group)}/key/${encodeURIComponent(key)}?n=${encodeURIComponent(n)}`,
        v.ctl.signal);
    } catch (_) {
      if (!v.ctl.signal.aborted && seq === v.lookupSeq) showLookupError(v, "the lookup got no answer; try again");
      return;
    }
    if (seq !== v.lookupSeq || v.ctl.signal.aborted) return; // a newer lookup superseded this one
    if (!res.ok || !res.body || !Array.isArray(res.body.services)) {
      showLookupError(v, errorLine(res.body, res.status));
      return;
    }
    v.lookupError.hidden = true;
    const owners = res.body.services;
    v.ownerIds = owners.map((s) => s.id);
    v.keyPos = typeof res.body.position === "number" ? res.body.position : null;
    const arc = res.body.arc;
    v.keyArc = Array.isArray(arc) && arc.length === 2 && arc.every((x) => typeof x === "number") ? arc : null;
    const frag = document.createDocumentFragment();
    owners.forEach((s, i) => {
      frag.append(h("li", { "data-service": s.id, class: i === 0 ? "owner" : "next" },
        h("span", { class: "name" }, s.id), " ", h("span", { class: "addr" }, s.addr || ""),
        " ", h("span", { class: "role" }, i === 0 ? "owner" : "next")));
    });
    v.owners.replaceChildren(frag);
    applyHighlight(v);
  }

  /** Owner arcs get class "owner", the next owners' "next"; a marker and a spoke show the key. */
  function applyHighlight(v) {
    const first = v.ownerIds[0];
    const next = new Set(v.ownerIds.slice(1));
    v.svg.classList.toggle("lookup", v.ownerIds.length > 0);
    for (const p of v.arcs.children) {
      const id = p.getAttribute("data-service");
      p.classList.toggle("owner", id === first);
      p.classList.toggle("next", id !== first && next.has(id));
    }
    v.marker.replaceChildren();
    if (v.keyPos !== null && v.ownerIds.length) {
      if (v.keyArc) { // the owner's arc the key falls in, as a band outside the ring
        const [a, b] = v.keyArc;
        v.marker.append(svg("path", { class: "key-arc", d: arcPath(a, b > a ? b : b + 1, R_OUT + 7, R_OUT + 2) }));
      }
      const [x, y] = point(v.keyPos, R_MARK).split(" ");
      const [ox, oy] = point(v.keyPos, R_OUT + 8).split(" ");
      const [ix, iy] = point(v.keyPos, R_IN - 14).split(" "); // from inside the band: the centre holds the label
      v.marker.append(
        svg("line", { x1: ix, y1: iy, x2: ox, y2: oy, class: "spoke" }),
        svg("circle", { id: "key-marker", cx: x, cy: y, r: 7 },
          svg("title", {}, `key ${v.lookup ? v.lookup.key : ""}: owned by ${first}`)));
    }
  }

  // ---- start ---------------------------------------------------------------------------

  document.getElementById("skip").addEventListener("click", (e) => {
    e.preventDefault(); // the hash is the router's: move focus without touching it
    main.focus();
  });
  window.addEventListener("hashchange", () => route(true));
  // A page left may be kept whole in the back/forward cache.  Its 30 s blocking query would keep
  // holding one of the browser's six HTTP/1.1 connections to the registry there, and after six
  // such pages every request of the page in use queues behind them.  So a page hidden ends its
  // requests, and one shown again from the cache starts its view afresh (new index, new data).
  window.addEventListener("pagehide", () => {
    if (current) current.ctl.abort();
  });
  window.addEventListener("pageshow", (e) => {
    if (!e.persisted) return;
    current = null;
    route(false);
  });
  route(false);
})();
