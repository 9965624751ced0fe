// P3 baseline (issue 7): the seed's P2000 design in plain JavaScript.
//
// - a `hostStore` (Map of host state) that caches each row's and card's element references
//   once, when the hosts are rendered from a snapshot (the seed's `hydrate()`);
// - `hostStore.update(id, patch)` merges the patch (metrics deep-merged) and calls
//   `renderHost(id)` synchronously, once per frame received: no batching;
// - `renderHost(id)` writes directly into the cached elements, and only the fields whose
//   shown value changed: metric text / data-value / metric-high class, the metrics title,
//   last-seen text / class / data-timestamp, the offline class, the status indicator (a
//   pulse per heartbeat, as the seed's triggerHeartbeat and the dashboard both do) and the
//   compartment classes;
// - the seed's 1 s last-seen updater.
//
// Texts and classes follow the dashboard's (app/src/presentation.rs) so the two pages show
// the same thing and the benchmark can compare final values.
(function () {
  "use strict";

  const params = new URLSearchParams(location.search);
  const MODE = params.get("mode") || "render"; // "render" | "transport"
  const WS_URL = params.get("ws") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const HEARTBEAT_S = 5; // protocol::DEFAULT_HEARTBEAT_S, as the dashboard's LastSeen uses
  const COMPARTMENTS = [
    ["agent", "Agent"],
    ["git", "Git"],
    ["lock", "Lock"],
    ["system", "System"],
    ["tests", "Tests"],
  ];

  // Counters for the benchmark.
  const bench = (window.__bench = { mode: MODE, snapshots: 0, heartbeats: 0, other: 0, hosts: 0 });

  // ------------------------------------------------------------------ presentation
  const esc = (s) =>
    String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  const percent = (v) => (v == null || !isFinite(v) ? "—" : `${Math.round(v)}%`);
  const metricClass = (v) => (v != null && v >= 80 ? "metric metric-high" : "metric");
  const metricsTitle = (m) =>
    m ? `RAM ${m.ram.toFixed(0)}% · Swap ${m.swap.toFixed(0)}% · Load ${m.load.toFixed(2)}` : "No metrics reported yet";
  function formatAge(s) {
    s = Math.max(0, s);
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h`;
    return `${Math.floor(s / 86400)}d`;
  }
  const toSecs = (t) => (t ? Math.floor(Date.parse(t) / 1000) : null);
  // The seed's formatLastSeen: relative text and a freshness class.
  function formatLastSeen(seenSecs, nowSecs) {
    if (seenSecs == null) return { text: "never", className: "last-seen stale" };
    const age = Math.max(0, nowSecs - seenSecs);
    const className =
      age <= 2 * HEARTBEAT_S ? "last-seen ok" : age <= 10 * HEARTBEAT_S ? "last-seen warn" : "last-seen stale";
    return { text: `${formatAge(age)} ago`, className };
  }
  function indicatorClass(online, busy, beats) {
    const base = !online
      ? "status-indicator status-dot status-offline"
      : busy
        ? "status-indicator status-dot status-running"
        : "status-indicator status-ripple";
    return beats === 0 ? base : `${base} ${beats % 2 === 0 ? "pulse-a" : "pulse-b"}`;
  }
  const indicatorTitle = (online, busy) => (!online ? "Offline" : busy ? "Online, running a command" : "Online and idle");
  const compartmentClass = (s) =>
    ({ ok: "update-compartment", outdated: "update-compartment needs-update", error: "update-compartment error", working: "update-compartment working" })[s] ||
    "update-compartment unknown";
  const compartmentCode = (s) => ({ ok: "OK", outdated: "UP", error: "ER", working: ".." })[s] || "??";
  const compartmentTitle = (label, check) => {
    const state = { ok: "ok", outdated: "needs an update", error: "error", working: "working" }[check.status] || "unknown";
    return check.message ? `${label}: ${state} — ${check.message}` : `${label}: ${state}`;
  };

  // ------------------------------------------------------------------ markup (as the dashboard's)
  function metricsHtml(m) {
    const one = (name, label, v) =>
      `<span data-metric="${name}"${v == null ? "" : ` data-value="${v}"`} class="${metricClass(v)}">${label} <span class="metric-val">${percent(v)}</span></span>`;
    return `<span data-cell="metrics" title="${esc(metricsTitle(m))}" class="metrics">${one("cpu", "CPU", m && m.cpu)} ${one("ram", "RAM", m && m.ram)}</span>`;
  }
  function lastSeenHtml(h, now) {
    const r = formatLastSeen(toSecs(h.last_seen), now);
    return `<span data-cell="last-seen"${h.last_seen ? ` data-timestamp="${esc(h.last_seen)}"` : ""} class="${r.className}">${r.text}</span>`;
  }
  function compartmentsHtml(h) {
    return `<span class="update-status">${COMPARTMENTS.map(([name, label]) => {
      const c = h.update_status[name];
      const t = esc(compartmentTitle(label, c));
      return `<span data-compartment="${name}" title="${t}" aria-label="${t}" class="${compartmentClass(c.status)}"><span class="compartment-indicator compartment-indicator--${c.status}"></span><span class="compartment-code">${compartmentCode(c.status)}</span>${name === "lock" && h.agent_outdated ? '<span class="agent-badge" title="The agent is outdated">A</span>' : ""}</span>`;
    }).join("")}</span>`;
  }
  function actionsHtml(h) {
    const busy = !!h.pending_command;
    const off = !h.online || busy ? " disabled" : "";
    const item = (cmd, label) => `<button type="button" role="menuitem" data-command="${cmd}"${off}>${label}</button>`;
    return (
      `<span class="host-actions">` +
      `<button type="button" data-command="pull"${off} class="btn-pull">Pull</button>` +
      `<button type="button" data-command="switch"${off} class="btn-switch">Switch</button>` +
      (busy
        ? `<button type="button" data-command="stop" class="btn-stop">Stop</button>`
        : `<button type="button" data-command="test"${off} class="btn-test">Test</button>`) +
      `<button type="button" aria-label="Refresh this host's status" title="Refresh status" class="btn-refresh">↻</button>` +
      `<details class="host-menu"><summary aria-label="More actions">⋮</summary><div role="menu" class="menu">` +
      item("pull-switch", "Pull + switch") + item("update", "Update flake.lock") + item("rollback", "Rollback") + item("restart", "Restart agent") +
      `<button type="button" role="menuitem" data-command="unlock"${busy ? "" : " disabled"}>Unlock</button>` +
      `<button type="button" role="menuitem" data-command="log">Show output</button>` +
      `<button type="button" role="menuitem" data-command="download-logs">Download logs</button>` +
      `<button type="button" role="menuitem" data-command="remove" class="danger">Remove host…</button>` +
      `</div></details></span>`
    );
  }
  function parts(h, now) {
    const busy = !!h.pending_command;
    const gen = h.generation ? h.generation.slice(0, 7) : "—";
    return {
      select: `<input type="checkbox" aria-label="Select ${esc(h.hostname)}" class="select-host">`,
      status: `<span title="${indicatorTitle(h.online, busy)}" class="${indicatorClass(h.online, busy, 0)}"></span>`,
      name:
        `<span class="hostname" style="color:${esc(h.theme_color)};">${esc(h.hostname)}</span>` +
        (busy ? `<span class="progress-badge-mini">${esc(h.pending_command.command)}</span>` : ""),
      kind: `<span class="host-type">${esc(h.host_type)}</span><span class="location">${esc(h.location || "")}</span>`,
      metrics: metricsHtml(h.metrics),
      lastSeen: lastSeenHtml(h, now),
      generation: `<span title="${esc(h.generation || "")}" class="generation">${esc(gen)}</span>`,
      compartments: compartmentsHtml(h),
      actions: actionsHtml(h),
    };
  }
  function rowHtml(h, now) {
    const p = parts(h, now);
    return (
      `<tr data-host-id="${esc(h.id)}" class="host-row${h.online ? "" : " host-offline"}">` +
      `<td class="cell-select">${p.select}</td><td class="cell-status">${p.status}</td>` +
      `<td class="cell-host">${p.name}</td><td class="cell-type">${p.kind}</td>` +
      `<td class="cell-metrics">${p.metrics}</td><td class="cell-last-seen">${p.lastSeen}</td>` +
      `<td class="cell-agent">${esc(h.agent_version || "—")}</td><td class="cell-gen">${p.generation}</td>` +
      `<td class="cell-status-compartments">${p.compartments}</td><td class="cell-actions">${p.actions}</td></tr>`
    );
  }
  function cardHtml(h, now) {
    const p = parts(h, now);
    return (
      `<article data-host-id="${esc(h.id)}" class="host-card${h.online ? "" : " host-offline"}">` +
      `<header class="card-head">${p.select}${p.status}${p.name}<span class="spacer"></span>${p.kind}</header>` +
      `<div class="card-body">${p.metrics}${p.lastSeen}${p.generation}</div>${p.compartments}${p.actions}</article>`
    );
  }

  // ------------------------------------------------------------------ clock
  // The server's time as the page estimates it (offset fixed from each snapshot).
  let clockOffset = 0;
  const nowSecs = () => Math.floor(Date.now() / 1000 + clockOffset);

  // ------------------------------------------------------------------ the seed's hostStore
  const hostStore = {
    _hosts: new Map(),

    // Cache each host's element references once (the seed's hydrate()).
    hydrate() {
      this._hosts.clear();
      const cards = new Map();
      document.querySelectorAll("#host-cards > .host-card[data-host-id]").forEach((c) => cards.set(c.dataset.hostId, c));
      document.querySelectorAll("#host-rows > tr[data-host-id]").forEach((row) => {
        const id = row.dataset.hostId;
        const h = pendingHosts.get(id);
        if (!h) return;
        this._hosts.set(id, {
          id,
          hostname: h.hostname,
          online: h.online,
          lastSeen: h.last_seen,
          pendingCommand: h.pending_command,
          metrics: h.metrics,
          updateStatus: h.update_status,
          agentOutdated: h.agent_outdated,
          beats: 0,
          // What each element shows now, so renderHost writes only what changed.
          _shown: null,
          _elements: [row, cards.get(id)].filter(Boolean).map(cacheElements),
        });
      });
      for (const host of this._hosts.values()) host._shown = shownOf(host);
      bench.hosts = this._hosts.size;
    },

    get(id) {
      return this._hosts.get(id);
    },

    all() {
      return Array.from(this._hosts.values());
    },

    update(id, patch) {
      const current = this._hosts.get(id);
      if (!current) return;
      const next = { ...current, ...patch };
      if (patch.metrics && current.metrics) next.metrics = { ...current.metrics, ...patch.metrics };
      if (patch.updateStatus && current.updateStatus) next.updateStatus = { ...current.updateStatus, ...patch.updateStatus };
      next._elements = current._elements;
      this._hosts.set(id, next);
      renderHost(id);
    },

    setOffline(id) {
      this.update(id, { online: false, pendingCommand: null });
    },
  };
  window.hostStore = hostStore;
  let pendingHosts = new Map();

  function cacheElements(root) {
    const q = (sel) => root.querySelector(sel);
    const cpu = q('[data-metric="cpu"]');
    const ram = q('[data-metric="ram"]');
    return {
      root,
      indicator: q(".status-indicator"),
      metrics: q('[data-cell="metrics"]'),
      cpu,
      cpuVal: cpu && cpu.querySelector(".metric-val"),
      ram,
      ramVal: ram && ram.querySelector(".metric-val"),
      lastSeen: q('[data-cell="last-seen"]'),
      compartments: COMPARTMENTS.map(([name]) => {
        const el = q(`[data-compartment="${name}"]`);
        return { el, indicator: el.querySelector(".compartment-indicator"), code: el.querySelector(".compartment-code") };
      }),
    };
  }

  function shownOf(host) {
    const m = host.metrics;
    const seen = formatLastSeen(toSecs(host.lastSeen), nowSecs());
    return {
      offline: !host.online,
      indicator: indicatorClass(host.online, !!host.pendingCommand, host.beats),
      cpuText: percent(m && m.cpu),
      cpuClass: metricClass(m && m.cpu),
      cpuValue: m ? String(m.cpu) : null,
      ramText: percent(m && m.ram),
      ramClass: metricClass(m && m.ram),
      ramValue: m ? String(m.ram) : null,
      metricsTitle: metricsTitle(m),
      timestamp: host.lastSeen,
      seenText: seen.text,
      seenClass: seen.className,
      compartments: COMPARTMENTS.map(([name]) => (host.updateStatus[name] || { status: "unknown" }).status),
    };
  }

  // The seed's renderHost: both layouts, cached elements, direct writes of what changed.
  function renderHost(id) {
    const host = hostStore.get(id);
    if (!host) return;
    const was = host._shown;
    const now = shownOf(host);
    host._shown = now;
    for (const el of host._elements) {
      if (now.offline !== was.offline) {
        el.root.classList.toggle("host-offline", now.offline);
        el.indicator.title = indicatorTitle(host.online, !!host.pendingCommand);
      }
      if (now.indicator !== was.indicator) el.indicator.className = now.indicator;
      if (now.cpuText !== was.cpuText) el.cpuVal.textContent = now.cpuText;
      if (now.cpuClass !== was.cpuClass) el.cpu.classList.toggle("metric-high", now.cpuClass !== "metric");
      if (now.cpuValue !== was.cpuValue) el.cpu.dataset.value = now.cpuValue;
      if (now.ramText !== was.ramText) el.ramVal.textContent = now.ramText;
      if (now.ramClass !== was.ramClass) el.ram.classList.toggle("metric-high", now.ramClass !== "metric");
      if (now.ramValue !== was.ramValue) el.ram.dataset.value = now.ramValue;
      if (now.metricsTitle !== was.metricsTitle) el.metrics.title = now.metricsTitle;
      if (now.timestamp !== was.timestamp) el.lastSeen.dataset.timestamp = now.timestamp;
      if (now.seenText !== was.seenText) el.lastSeen.textContent = now.seenText;
      if (now.seenClass !== was.seenClass) el.lastSeen.className = now.seenClass;
      for (let i = 0; i < COMPARTMENTS.length; i++) {
        if (now.compartments[i] === was.compartments[i]) continue;
        const c = el.compartments[i];
        const s = now.compartments[i];
        const check = host.updateStatus[COMPARTMENTS[i][0]];
        c.el.className = compartmentClass(s);
        c.el.title = compartmentTitle(COMPARTMENTS[i][1], check);
        c.indicator.className = `compartment-indicator compartment-indicator--${s}`;
        c.code.textContent = compartmentCode(s);
      }
    }
  }

  // The seed's startLastSeenUpdater: every second, refresh each host's relative time.
  setInterval(() => {
    const now = nowSecs();
    for (const host of hostStore._hosts.values()) {
      const r = formatLastSeen(toSecs(host.lastSeen), now);
      const was = host._shown;
      if (r.text === was.seenText && r.className === was.seenClass) continue;
      for (const el of host._elements) {
        if (r.text !== was.seenText) el.lastSeen.textContent = r.text;
        if (r.className !== was.seenClass) el.lastSeen.className = r.className;
      }
      was.seenText = r.text;
      was.seenClass = r.className;
    }
  }, 1000);

  // ------------------------------------------------------------------ messages
  function renderSnapshot(p) {
    clockOffset = toSecs(p.server_time) - Date.now() / 1000;
    const now = nowSecs();
    pendingHosts = new Map(p.hosts.map((h) => [h.id, h]));
    const hosts = p.hosts.slice().sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    document.getElementById("host-rows").innerHTML = hosts.map((h) => rowHtml(h, now)).join("");
    document.getElementById("host-cards").innerHTML = hosts.map((h) => cardHtml(h, now)).join("");
    hostStore.hydrate();
    pendingHosts = new Map();
    const online = p.hosts.filter((h) => h.online).length;
    document.querySelector(".fleet-count").textContent = `${online}/${p.hosts.length} online`;
  }

  // The seed's handleMessage, for the frames this page knows.
  function handleMessage(msg) {
    if (!msg || typeof msg !== "object" || !msg.type) return;
    const payload = msg.payload || {};
    const hostId = payload.host_id;
    switch (msg.type) {
      case "snapshot":
        bench.snapshots++;
        renderSnapshot(payload);
        break;
      case "host_heartbeat": {
        if (!hostId) return;
        bench.heartbeats++;
        const host = hostStore.get(hostId);
        hostStore.update(hostId, {
          online: true,
          lastSeen: payload.last_seen,
          metrics: payload.metrics,
          beats: host ? host.beats + 1 : 0,
        });
        break;
      }
      case "host_offline":
        if (!hostId) return;
        hostStore.setOffline(hostId);
        break;
      default:
        bench.other++;
    }
  }

  function connect() {
    const ws = new WebSocket(WS_URL);
    const link = document.querySelector(".link-state");
    ws.onopen = () => {
      link.dataset.state = "connected";
      link.querySelector(".link-text").textContent = "Connected";
    };
    ws.onmessage = (ev) => {
      if (MODE === "transport") {
        // Only what delivering a frame costs: heartbeats are counted, not parsed.
        if (bench.snapshots === 0) {
          handleMessage(JSON.parse(ev.data));
        } else {
          bench.heartbeats++;
        }
        return;
      }
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      handleMessage(msg);
    };
    ws.onclose = () => {
      link.dataset.state = "connecting";
      link.querySelector(".link-text").textContent = "Connecting…";
      setTimeout(connect, 1000);
    };
  }
  connect();
})();
