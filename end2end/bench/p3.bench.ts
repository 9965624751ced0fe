// Target P3 of docs/BENCHMARKS.md: "browser: 1 000 hosts shown, 200 heartbeats/s for 30 s — main-thread
// time per heartbeat ≤ 1.3× the vanilla page; main thread < 25 % busy".
//
// A benchmark, not a test: it prints figures and never fails on timing (it fails only when
// a page cannot be driven at all). Three pages get the identical, seeded stream, so no
// server load differs:
//   - nixdeck:   the real dashboard (a fleet.ts `Server`, logged in with `loginUi`); its
//                `/ws` is answered by the bench, which sends a snapshot of 1 000 hosts,
//                then the heartbeats;
//   - vanilla:   bench/vanilla.html + vanilla.js, the seed's hostStore + renderHost on the
//                same markup and stylesheet;
//   - transport: the vanilla page in ?mode=transport, which only counts heartbeats: what
//                receiving the frames costs the page by itself, for reading the other two.
// How frames reach the page (P3_TRANSPORT):
//   - socket (default): a real WebSocket. Each page opens a `SocketOrigin`
//     (bench/socket-origin.ts): its own origin that forwards HTTP to the nixdeck server,
//     serves the vanilla files and answers `/ws` itself, so the browser receives frames
//     natively;
//   - route: Playwright's WebSocket routing (`page.routeWebSocket`). Simpler, but every
//     frame costs the page a Runtime.evaluate: the routed transport page alone was 23 %
//     busy, which hid whether nixdeck meets "< 25 % busy" (session 3).
// Main-thread time comes from CDP `Performance.getMetrics` (TaskDuration, ScriptDuration,
// LayoutDuration, RecalcStyleDuration) before and after the stream.
//
//   cd end2end && npx playwright test -c bench/playwright.bench.config.ts
//
// Knobs (environment): P3_RUNS (3), P3_HOSTS (1000), P3_RATE (200 /s; 0: an idle window),
// P3_SECONDS (30),
// P3_SEED (7), P3_PORT (3961), P3_PROFILE (auto: profile when the target is missed; 1; 0),
// P3_PROFILE_SECONDS (10: the profiled stream is the first seconds of the same one),
// P3_TRACE=1 (also record a Chrome trace of that stream on the nixdeck and transport pages
// and print the main thread's time by event: paint, a frame's task, script…),
// P3_PAGES (transport,vanilla,nixdeck), P3_OUT (results directory), NIXDECK_SERVER_BIN,
// P3_SITE_ROOT (default target/site).
import { Browser, CDPSession, Page, test, WebSocketRoute } from "@playwright/test";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { loadavg } from "node:os";
import { join } from "node:path";
import { loginUi, Server } from "../tests/fleet";
import { FrameSink, SocketOrigin } from "./socket-origin";
import { mainThreadSelfTimes, startTrace, stopTrace } from "./trace";

const ROOT = join(__dirname, "../..");
const RUNS = Number(process.env.P3_RUNS ?? 3);
const HOSTS = Number(process.env.P3_HOSTS ?? 1000);
const RATE = Number(process.env.P3_RATE ?? 200);
const SECONDS = Number(process.env.P3_SECONDS ?? 30);
const SEED = Number(process.env.P3_SEED ?? 7);
const PORT = Number(process.env.P3_PORT ?? 3961);
const PROFILE = process.env.P3_PROFILE ?? "auto";
const OUT = process.env.P3_OUT ?? join(__dirname, "../test-results/p3-bench");
const SITE_ROOT = process.env.P3_SITE_ROOT ?? join(ROOT, "target/site");
// fleet.ts starts NIXDECK_SERVER_BIN; the bench config points it at the release build when
// there is one (the browser-side figures depend on the wasm in the site, not on this).
const SERVER_BIN = process.env.NIXDECK_SERVER_BIN ?? join(ROOT, "target/debug/nixdeck");
const PROFILE_SECONDS = Number(process.env.P3_PROFILE_SECONDS ?? 10);
const TRACE = process.env.P3_TRACE === "1";
const PAGES = (process.env.P3_PAGES ?? "transport,vanilla,nixdeck").split(",");
const TRANSPORT = (process.env.P3_TRANSPORT ?? "socket") as "socket" | "route";
const PASSWORD = "p3-bench-password-1234";
const HEARTBEATS = RATE * SECONDS;
const VANILLA_ORIGIN = "http://vanilla.bench";
/** The window closes once the page shows the stream's last heartbeats (at least this long
 *  after the last one was sent): a page that falls behind is charged for catching up. */
const DRAIN_MS = 100;
/** Between the 1 000 rows appearing and the stream: hydration, GC and the snapshot settle. */
const SETTLE_MS = 3000;

type Kind = "transport" | "vanilla" | "nixdeck";

// ------------------------------------------------------------------ the seeded stream

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A percentage with one decimal that never ends in .5, so JS Math.round and Rust's `{:.0}`
 *  (half to even) show the same text. */
function pct(r: () => number): number {
  let tenths = Math.floor(r() * 1000);
  if (tenths % 10 === 5) tenths += 1;
  return tenths / 10;
}

interface Metrics {
  cpu: number;
  ram: number;
  swap: number;
  load: number;
}
interface Beat {
  host: number;
  metrics: Metrics;
}

function metrics(r: () => number): Metrics {
  return { cpu: pct(r), ram: pct(r), swap: pct(r), load: Math.floor(r() * 400) / 100 };
}

const hostId = (i: number) => `h${String(i).padStart(4, "0")}`;
const rfc3339 = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

/** The same for every page: initial metrics per host, then the heartbeats in order. */
function generate(): { initial: Metrics[]; beats: Beat[] } {
  const r = mulberry32(SEED);
  const initial = Array.from({ length: HOSTS }, () => metrics(r));
  const beats = Array.from({ length: HEARTBEATS }, () => ({ host: Math.floor(r() * HOSTS), metrics: metrics(r) }));
  return { initial, beats };
}
const STREAM = generate();

function snapshotFrame(): string {
  const now = rfc3339(Date.now());
  const ok = { status: "ok", message: "", checked_at: null };
  const hosts = STREAM.initial.map((m, i) => ({
    id: hostId(i),
    hostname: hostId(i),
    host_type: i % 10 === 9 ? "macos" : "nixos",
    theme_color: i % 10 === 9 ? "#bb9af7" : "#7aa2f7",
    location: `rack ${Math.floor(i / 40) + 1}`,
    device_type: null,
    online: true,
    last_seen: now,
    pending_command: null,
    metrics: m,
    generation: createHash("sha1").update(`gen-${i % 7}`).digest("hex"),
    agent_version: "0.1.0",
    agent_outdated: false,
    os_version: "25.11",
    nixpkgs_version: "25.11.20261120",
    repo_url: null,
    repo_dir: null,
    update_status: { agent: ok, git: ok, lock: ok, system: ok, tests: ok },
  }));
  return JSON.stringify({
    type: "snapshot",
    payload: { hosts, pending_pr: null, dashboard_version: "0.1.0", server_time: now },
  });
}

/** What each host must show at the end: its last heartbeat's metrics (or the snapshot's). */
function finalMetrics(beats: Beat[] = STREAM.beats): Record<string, { cpu: number; ram: number }> {
  const last = STREAM.initial.map((m) => ({ cpu: m.cpu, ram: m.ram }));
  for (const b of beats) last[b.host] = { cpu: b.metrics.cpu, ram: b.metrics.ram };
  return Object.fromEntries(last.map((m, i) => [hostId(i), m]));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface StreamStats {
  sent: number;
  spanMs: number;
  maxLagMs: number;
}

/**
 * Runs `fn` as one internal Playwright call. Under the test runner every API call, each
 * `ws.send` included, becomes a reported test step (with its parameters: the whole frame);
 * 6 000 of them per page made the sender fall further behind with every page (in a first
 * attempt the 30 s stream took up to 105 s). Inside an internal zone the sends are plain
 * protocol messages.
 */
function quietly<T>(ws: WebSocketRoute, fn: () => Promise<T>): Promise<T> {
  const wrap = (ws as any)._wrapApiCall;
  return typeof wrap === "function" ? wrap.call(ws, fn, { internal: true }) : fn();
}

/** RATE heartbeats per second, spread evenly: heartbeat i is due at i / RATE seconds. */
function stream(opened: Opened, beats: Beat[] = STREAM.beats): Promise<StreamStats> {
  return opened.quietly(() => sendBeats(opened.sink, beats));
}

async function sendBeats(ws: FrameSink, beats: Beat[]): Promise<StreamStats> {
  if (beats.length === 0) {
    // P3_RATE=0: an idle window of the same length (what the page costs with no stream).
    await sleep(SECONDS * 1000);
    return { sent: 0, spanMs: SECONDS * 1000, maxLagMs: 0 };
  }
  const step = 1000 / RATE;
  const start = performance.now();
  let i = 0;
  let maxLag = 0;
  while (i < beats.length) {
    const now = performance.now();
    const due = start + i * step;
    if (now < due) {
      await sleep(Math.max(1, Math.min(due - now, 4)));
      continue;
    }
    const wall = Date.now();
    while (i < beats.length && start + i * step <= performance.now()) {
      maxLag = Math.max(maxLag, performance.now() - (start + i * step));
      const b = beats[i++];
      ws.send(
        JSON.stringify({
          type: "host_heartbeat",
          payload: { host_id: hostId(b.host), online: true, last_seen: rfc3339(wall), metrics: b.metrics },
        }),
      );
    }
  }
  return { sent: i, spanMs: performance.now() - start, maxLagMs: maxLag };
}

// ------------------------------------------------------------------ pages

/** Counts animation frames during the window; late ones mean dropped frames. */
const FRAME_PROBE = `(() => {
  const vsync = 1000 / 60;
  let on = false, last = 0, s = null;
  const tick = (t) => {
    if (!on) return;
    if (last) {
      const dt = t - last;
      s.frames++;
      if (dt > 1.5 * vsync) { s.late++; s.dropped += Math.round(dt / vsync) - 1; }
      if (dt > s.maxMs) s.maxMs = dt;
    }
    last = t;
    requestAnimationFrame(tick);
  };
  window.__p3frames = {
    start() { on = true; last = 0; s = { frames: 0, late: 0, dropped: 0, maxMs: 0 }; requestAnimationFrame(tick); },
    stop() { on = false; return s; },
  };
})();`;

interface Opened {
  page: Page;
  /** The page's current `/ws` connection. */
  sink: FrameSink;
  /** Runs the stream (routed sends need an internal zone; see `quietly`). */
  quietly: <T>(fn: () => Promise<T>) => Promise<T>;
  close: () => Promise<void>;
}

const VANILLA_FILES: Record<string, [string, string]> = {
  "/vanilla.html": [join(__dirname, "vanilla.html"), "text/html; charset=utf-8"],
  "/vanilla.js": [join(__dirname, "vanilla.js"), "text/javascript; charset=utf-8"],
};

async function open(browser: Browser, kind: Kind, server: Server): Promise<Opened> {
  const context = await browser.newContext();
  const page = await context.newPage();
  await page.addInitScript(FRAME_PROBE);
  let errors = 0;
  const report = (text: string) => {
    if (++errors <= 3) console.log(`  ${kind} page error: ${text.slice(0, 300)}`);
  };
  page.on("pageerror", (e) => report(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error") report(m.text());
  });
  // The latest socket the page opened (each connection starts with a snapshot, as the
  // real server's do).
  let current: WebSocketRoute | null = null;
  let connects = () => 0;
  let origin: SocketOrigin | null = null;
  let base = server.base;
  let vanillaBase = VANILLA_ORIGIN;
  if (TRANSPORT === "socket") {
    const files = Object.fromEntries(Object.entries(VANILLA_FILES).map(([p, f]) => [`/bench${p}`, f]));
    origin = new SocketOrigin(server.base, files, snapshotFrame);
    await origin.start(0);
    base = origin.base;
    vanillaBase = `${origin.base}/bench`;
    const o = origin;
    connects = () => o.connects;
  } else {
    let routed = 0;
    connects = () => routed;
    await page.routeWebSocket(
      (url) => url.pathname === "/ws",
      (ws) => {
        ws.onMessage(() => {}); // the page sends nothing we need
        void quietly(ws, async () => ws.send(snapshotFrame()));
        current = ws;
        routed++;
      },
    );
    const files: Record<string, [string, string]> = {
      ...VANILLA_FILES,
      "/pkg/nixdeck.css": [join(SITE_ROOT, "pkg/nixdeck.css"), "text/css; charset=utf-8"],
    };
    await page.route(`${VANILLA_ORIGIN}/**`, (route) => {
      const f = files[new URL(route.request().url()).pathname];
      if (!f) return route.fulfill({ status: 404, body: "not found" });
      return route.fulfill({ status: 200, contentType: f[1], body: readFileSync(f[0]) });
    });
  }
  const t0 = performance.now();
  if (kind === "nixdeck") {
    await loginUi(page, base, "admin", PASSWORD);
  } else {
    await page.goto(`${vanillaBase}/vanilla.html${kind === "transport" ? "?mode=transport" : ""}`);
  }
  // The vanilla page renders every host twice (row and card); nixdeck renders one element
  // per host and only the rows in view (a windowed list), so it is ready when its count
  // says every host arrived and the first window is on screen.
  await page.waitForFunction(
    ([n, windowed]) => {
      const rows = document.querySelectorAll("tbody tr[data-host-id]").length;
      if (!windowed) return rows === n && document.querySelectorAll(".host-cards .host-card[data-host-id]").length === n;
      return rows >= Math.min(n, 40) && (document.querySelector(".fleet-count")?.textContent ?? "").includes(`/${n} online`);
    },
    [HOSTS, kind === "nixdeck"] as const,
    { timeout: 300_000, polling: 250 },
  );
  // The first row (and card) as shown, to compare the two pages' markup (hydration markers
  // left out).
  const markup = await page.evaluate(() =>
    [document.querySelector("tbody tr[data-host-id]"), document.querySelector(".host-card[data-host-id]")]
      .filter((e): e is Element => e !== null)
      .map((e) => e.outerHTML.replace(/<!--[^]*?-->/g, ""))
      .join("\n\n"),
  );
  writeFileSync(join(OUT, `${kind}-markup.html`), markup + "\n");
  console.log(`  ${kind}: ${HOSTS} rows shown ${((performance.now() - t0) / 1000).toFixed(1)} s after opening`);
  if (connects() === 0) throw new Error(`${kind}: the page never opened /ws`);
  if (connects() > 1) console.log(`  ${kind}: the page opened /ws ${connects()} times`);
  const close = async () => {
    await context.close();
    await origin?.stop();
  };
  if (origin) {
    const o = origin;
    return { page, sink: { send: (t) => o.latest?.send(t) }, quietly: (fn) => fn(), close };
  }
  const ws = current as WebSocketRoute | null;
  if (!ws) throw new Error(`${kind}: the page never opened /ws`);
  return { page, sink: { send: (t) => current?.send(t) }, quietly: (fn) => quietly(ws, fn), close };
}

/** Whether the page has applied the whole stream: the hosts of the last 20 heartbeats show
 *  their final values (nixdeck, vanilla) or every heartbeat was counted (transport). */
async function caughtUp(page: Page, kind: Kind, beats: Beat[]): Promise<boolean> {
  if (kind === "transport") return page.evaluate((n) => (window as any).__bench.heartbeats >= n, beats.length);
  const all = finalMetrics(beats);
  // The hosts of the last heartbeats that have a row on the page (nixdeck renders only the
  // rows in view), at most 20.
  const recent = beats.slice(-400).map((b) => hostId(b.host)).reverse();
  return page.evaluate(
    ([recent, all]) => {
      const tail = [...new Set(recent)].filter((id) => document.querySelector(`tbody tr[data-host-id="${id}"]`)).slice(0, 20);
      if (tail.length === 0) return false;
      for (const id of tail) {
        const want = all[id];
        const row = document.querySelector(`tbody tr[data-host-id="${id}"]`);
        const cpu = row?.querySelector('[data-metric="cpu"] .metric-val')?.textContent;
        const ram = row?.querySelector('[data-metric="ram"] .metric-val')?.textContent;
        if (cpu !== `${Math.round(want.cpu)}%` || ram !== `${Math.round(want.ram)}%`) return false;
      }
      return true;
    },
    [recent, all] as const,
  );
}

/** Waits until the page has caught up with the stream; how long that took after the last send. */
async function drain(page: Page, kind: Kind, beats: Beat[] = STREAM.beats): Promise<number> {
  const start = performance.now();
  await sleep(DRAIN_MS);
  while (!(await caughtUp(page, kind, beats))) {
    if (performance.now() - start > 3_600_000) throw new Error(`${kind} did not catch up within an hour`);
    await sleep(100);
  }
  return performance.now() - start;
}

/** Rows and cards whose CPU/RAM text or high class differ from the last values sent. */
async function mismatches(page: Page): Promise<{ checked: number; wrong: number; examples: string[] }> {
  return page.evaluate((expected) => {
    const percent = (v: number) => `${Math.round(v)}%`;
    let checked = 0;
    let wrong = 0;
    const examples: string[] = [];
    const roots = document.querySelectorAll("tbody tr[data-host-id], .host-cards .host-card[data-host-id]");
    roots.forEach((root) => {
      const id = (root as HTMLElement).dataset.hostId!;
      const want = expected[id];
      for (const name of ["cpu", "ram"] as const) {
        const el = root.querySelector(`[data-metric="${name}"]`)!;
        const text = el.querySelector(".metric-val")!.textContent;
        const high = el.classList.contains("metric-high");
        checked++;
        if (text !== percent(want[name]) || high !== want[name] >= 80) {
          wrong++;
          if (examples.length < 5) examples.push(`${id} ${name}: shows ${text}${high ? " (high)" : ""}, sent ${want[name]}`);
        }
      }
    });
    return { checked, wrong, examples };
  }, finalMetrics());
}

type Perf = Record<string, number>;
async function perf(cdp: CDPSession): Promise<Perf> {
  const { metrics } = await cdp.send("Performance.getMetrics");
  return Object.fromEntries(metrics.map((m: { name: string; value: number }) => [m.name, m.value]));
}

interface Measure {
  kind: Kind;
  run: number;
  windowS: number;
  busyPct: number;
  taskMsPerBeat: number;
  scriptMsPerBeat: number;
  layoutMsPerBeat: number;
  styleMsPerBeat: number;
  /** Main-thread CPU time (threadTicks), when the browser supports it. */
  cpuBusyPct: number | null;
  cpuMsPerBeat: number | null;
  frames: { frames: number; late: number; dropped: number; maxMs: number };
  stream: StreamStats;
  /** From the last heartbeat sent until the page showed it. */
  catchUpMs: number;
  received: number | null;
  atWindowEnd: { checked: number; wrong: number; examples: string[] } | null;
  afterSettle: { checked: number; wrong: number; examples: string[] } | null;
  heapMB: number;
  load1: [number, number];
}

async function measure(browser: Browser, kind: Kind, run: number, server: Server): Promise<Measure> {
  const opened = await open(browser, kind, server);
  const { page, close } = opened;
  try {
    await sleep(SETTLE_MS);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Performance.enable", { timeDomain: "timeTicks" });
    let cpu: CDPSession | null = await page.context().newCDPSession(page);
    try {
      await cpu.send("Performance.enable", { timeDomain: "threadTicks" });
    } catch {
      cpu = null;
    }
    const loadBefore = loadavg()[0];
    await page.evaluate(() => (window as any).__p3frames.start());
    const [a, ac] = await Promise.all([perf(cdp), cpu ? perf(cpu) : null]);
    const st = await stream(opened);
    const catchUpMs = await drain(page, kind);
    const [b, bc] = await Promise.all([perf(cdp), cpu ? perf(cpu) : null]);
    const frames = await page.evaluate(() => (window as any).__p3frames.stop());
    const loadAfter = loadavg()[0];
    const d = (name: string) => b[name] - a[name];
    const wall = d("Timestamp");
    const received = kind === "nixdeck" ? null : await page.evaluate(() => (window as any).__bench.heartbeats);
    const atWindowEnd = kind === "transport" ? null : await mismatches(page);
    await sleep(2000);
    const afterSettle = kind === "transport" ? null : await mismatches(page);
    let cpuBusyPct: number | null = null;
    let cpuMsPerBeat: number | null = null;
    if (ac && bc && bc.TaskDuration > 0) {
      const dt = bc.TaskDuration - ac.TaskDuration;
      cpuBusyPct = (100 * dt) / wall;
      cpuMsPerBeat = (1000 * dt) / st.sent;
    }
    return {
      kind,
      run,
      windowS: wall,
      busyPct: (100 * d("TaskDuration")) / wall,
      taskMsPerBeat: (1000 * d("TaskDuration")) / st.sent,
      scriptMsPerBeat: (1000 * d("ScriptDuration")) / st.sent,
      layoutMsPerBeat: (1000 * d("LayoutDuration")) / st.sent,
      styleMsPerBeat: (1000 * d("RecalcStyleDuration")) / st.sent,
      cpuBusyPct,
      cpuMsPerBeat,
      frames,
      stream: st,
      catchUpMs,
      received,
      atWindowEnd,
      afterSettle,
      heapMB: b.JSHeapUsedSize / 1e6,
      load1: [loadBefore, loadAfter],
    };
  } finally {
    await close();
  }
}

// ------------------------------------------------------------------ trace (P3_TRACE=1)

/** The main thread's self time by trace event over the first `PROFILE_SECONDS` of the
 * stream, as printable lines. */
async function trace(browser: Browser, kind: Kind, server: Server): Promise<string[]> {
  const opened = await open(browser, kind, server);
  const { page, close } = opened;
  try {
    await sleep(SETTLE_MS);
    const cdp = await page.context().newCDPSession(page);
    const beats = STREAM.beats.slice(0, RATE * PROFILE_SECONDS);
    await startTrace(cdp);
    await stream(opened, beats);
    await drain(page, kind, beats);
    return mainThreadSelfTimes(await stopTrace(cdp, join(OUT, `${kind}.trace.json`)));
  } finally {
    await close();
  }
}

// ------------------------------------------------------------------ profile (when missed)

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

/** Self time by function name over one streamed window, from the V8 sampling profiler. */
async function profile(browser: Browser, kind: Kind, server: Server) {
  const opened = await open(browser, kind, server);
  const { page, close } = opened;
  try {
    await sleep(SETTLE_MS);
    const cdp = await page.context().newCDPSession(page);
    await cdp.send("Performance.enable", { timeDomain: "timeTicks" });
    await cdp.send("Profiler.enable");
    await cdp.send("Profiler.setSamplingInterval", { interval: 1000 });
    const beats = STREAM.beats.slice(0, RATE * PROFILE_SECONDS);
    const a = await perf(cdp);
    await cdp.send("Profiler.start");
    const st = await stream(opened, beats);
    const catchUpMs = await drain(page, kind, beats);
    const { profile: p } = await cdp.send("Profiler.stop");
    const b = await perf(cdp);
    const nodes = new Map<number, ProfileNode>(p.nodes.map((n: ProfileNode) => [n.id, n]));
    const self = new Map<string, number>();
    let total = 0;
    for (let i = 0; i < p.samples.length; i++) {
      const dt = (p.timeDeltas[i + 1] ?? 0) / 1000; // ms: the time until the next sample
      const n = nodes.get(p.samples[i])!;
      const name = n.callFrame.functionName || "(anonymous)";
      if (name === "(idle)") continue;
      const file = n.callFrame.url.split("/").pop() || "";
      const key = file ? `${name}  [${file}]` : name;
      self.set(key, (self.get(key) ?? 0) + dt);
      total += dt;
    }
    const top = [...self.entries()]
      .sort((x, y) => y[1] - x[1])
      .slice(0, 30)
      .map(([fn, ms]) => ({ fn, ms: Math.round(ms), pct: +((100 * ms) / total).toFixed(1) }));
    const d = (name: string) => b[name] - a[name];
    return {
      kind,
      heartbeats: st.sent,
      catchUpMs: Math.round(catchUpMs),
      sampledMs: Math.round(total),
      taskMsPerBeat: (1000 * d("TaskDuration")) / st.sent,
      scriptMsPerBeat: (1000 * d("ScriptDuration")) / st.sent,
      layoutMsPerBeat: (1000 * d("LayoutDuration")) / st.sent,
      styleMsPerBeat: (1000 * d("RecalcStyleDuration")) / st.sent,
      top,
      raw: p,
    };
  } finally {
    await close();
  }
}

// ------------------------------------------------------------------ the benchmark

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const f = (x: number | null, digits = 3) => (x == null || !Number.isFinite(x) ? "—" : x.toFixed(digits));

function summarise(results: Measure[]) {
  const of = (k: Kind) => results.filter((r) => r.kind === k);
  const med = (k: Kind, key: "busyPct" | "taskMsPerBeat" | "cpuBusyPct" | "cpuMsPerBeat") => {
    const xs = of(k).map((r) => r[key]).filter((x): x is number => x != null);
    return xs.length ? median(xs) : NaN;
  };
  const perRunRatio = (key: "taskMsPerBeat" | "cpuMsPerBeat") =>
    of("nixdeck").map((n) => {
      const v = of("vanilla").find((r) => r.run === n.run);
      return v && n[key] != null && v[key] != null ? n[key]! / v[key]! : NaN;
    });
  const ratios = perRunRatio("taskMsPerBeat");
  const summary = {
    busyPct: { nixdeck: med("nixdeck", "busyPct"), vanilla: med("vanilla", "busyPct"), transport: med("transport", "busyPct") },
    cpuBusyPct: { nixdeck: med("nixdeck", "cpuBusyPct"), vanilla: med("vanilla", "cpuBusyPct"), transport: med("transport", "cpuBusyPct") },
    msPerBeat: { nixdeck: med("nixdeck", "taskMsPerBeat"), vanilla: med("vanilla", "taskMsPerBeat"), transport: med("transport", "taskMsPerBeat") },
    cpuMsPerBeat: { nixdeck: med("nixdeck", "cpuMsPerBeat"), vanilla: med("vanilla", "cpuMsPerBeat"), transport: med("transport", "cpuMsPerBeat") },
    ratioPerRun: ratios,
    ratioOfMedians: med("nixdeck", "taskMsPerBeat") / med("vanilla", "taskMsPerBeat"),
    medianOfRatios: median(ratios),
    cpuRatioPerRun: perRunRatio("cpuMsPerBeat"),
    /** With the transport page's cost (delivering the routed frames) taken off both. */
    netRatio:
      (med("nixdeck", "taskMsPerBeat") - med("transport", "taskMsPerBeat")) /
      (med("vanilla", "taskMsPerBeat") - med("transport", "taskMsPerBeat")),
  };
  return { summary, met: summary.ratioOfMedians <= 1.3 && summary.busyPct.nixdeck < 25 };
}

test("P3: 1 000 hosts, 200 heartbeats/s for 30 s, nixdeck vs the vanilla seed page", async ({ browser }) => {
  mkdirSync(OUT, { recursive: true });
  const wasm = join(SITE_ROOT, "pkg/nixdeck.wasm");
  const env = {
    date: new Date().toISOString(),
    chromium: browser.version(),
    serverBin: SERVER_BIN,
    serverBinMtime: statSync(SERVER_BIN).mtime.toISOString(),
    siteRoot: SITE_ROOT,
    wasmBytes: statSync(wasm).size,
    wasmSha256: createHash("sha256").update(readFileSync(wasm)).digest("hex").slice(0, 16),
    hosts: HOSTS,
    rate: RATE,
    seconds: SECONDS,
    heartbeats: HEARTBEATS,
    seed: SEED,
    runs: RUNS,
    transport: TRANSPORT,
  };
  console.log(`P3 setup: ${JSON.stringify(env)}`);
  const server = new Server(PORT, { NIXDECK_ADMIN_PASSWORD: PASSWORD, NIXDECK_SITE_ROOT: SITE_ROOT, RUST_LOG: "warn" });
  await server.start();
  const results: Measure[] = [];
  try {
    // The order rotates per run, so slow drift on a shared machine does not favour a page.
    const orders: Kind[][] = [
      ["transport", "vanilla", "nixdeck"],
      ["nixdeck", "transport", "vanilla"],
      ["vanilla", "nixdeck", "transport"],
    ];
    for (let run = 1; run <= RUNS; run++) {
      for (const kind of orders[(run - 1) % orders.length].filter((k) => PAGES.includes(k))) {
        const m = await measure(browser, kind, run, server);
        results.push(m);
        console.log(
          `run ${run} ${kind.padEnd(9)} busy ${f(m.busyPct, 1)}% (cpu ${f(m.cpuBusyPct, 1)}%), ` +
            `${f(m.taskMsPerBeat)} ms/heartbeat (cpu ${f(m.cpuMsPerBeat)}; script ${f(m.scriptMsPerBeat)}, ` +
            `layout ${f(m.layoutMsPerBeat)}, style ${f(m.styleMsPerBeat)}), window ${f(m.windowS, 2)} s, ` +
            `sent ${m.stream.sent} in ${f(m.stream.spanMs / 1000, 2)} s (max lag ${f(m.stream.maxLagMs, 1)} ms), ` +
            `caught up ${f(m.catchUpMs, 0)} ms after, ` +
            `frames ${m.frames.frames} (late ${m.frames.late}, dropped ${m.frames.dropped}, max ${f(m.frames.maxMs, 0)} ms), ` +
            `wrong at end ${m.atWindowEnd ? `${m.atWindowEnd.wrong}/${m.atWindowEnd.checked}` : "—"}, ` +
            `after 2 s ${m.afterSettle ? `${m.afterSettle.wrong}/${m.afterSettle.checked}` : "—"}` +
            `${m.received != null ? `, received ${m.received}` : ""}, heap ${f(m.heapMB, 1)} MB, ` +
            `load1 ${f(m.load1[0], 2)}→${f(m.load1[1], 2)}`,
        );
        if (m.afterSettle?.wrong) console.log(`  ${kind} shows stale values: ${m.afterSettle.examples.join("; ")}`);
      }
      writeFileSync(join(OUT, "results.json"), JSON.stringify({ env, results }, null, 2));
    }

    const { summary, met } = RUNS > 0 ? summarise(results) : { summary: null, met: true };
    if (summary) {
      console.log(`P3 medians: ${JSON.stringify(summary)}`);
      console.log(
        `P3 target (ratio ≤ 1.3 and busy < 25 %): ${met ? "met" : "MISSED"} — ratio ${f(summary.ratioOfMedians, 2)}, ` +
          `nixdeck busy ${f(summary.busyPct.nixdeck, 1)}%`,
      );
    }

    let profiles: Awaited<ReturnType<typeof profile>>[] = [];
    if (PROFILE === "1" || (PROFILE === "auto" && !met)) {
      for (const kind of ["nixdeck", "vanilla"] as Kind[]) {
        const p = await profile(browser, kind, server);
        writeFileSync(join(OUT, `${kind}.cpuprofile`), JSON.stringify(p.raw));
        const { raw, ...shown } = p;
        profiles.push(shown as any);
        console.log(
          `profile ${kind}: ${p.heartbeats} heartbeats, caught up ${p.catchUpMs} ms after the last; ` +
            `${p.sampledMs} ms sampled (non-idle), ${f(p.taskMsPerBeat)} ms/heartbeat while profiled ` +
            `(script ${f(p.scriptMsPerBeat)}, layout ${f(p.layoutMsPerBeat)}, style ${f(p.styleMsPerBeat)}); top self time:`,
        );
        for (const t of p.top.slice(0, 20)) console.log(`  ${String(t.ms).padStart(6)} ms ${String(t.pct).padStart(5)} %  ${t.fn}`);
      }
    }
    if (TRACE) {
      for (const kind of ["nixdeck", "transport"] as Kind[]) {
        const lines = await trace(browser, kind, server);
        console.log(`trace ${kind}, ${RATE * PROFILE_SECONDS} heartbeats (${join(OUT, `${kind}.trace.json`)}), main thread by event:`);
        for (const line of lines) console.log(`  ${line}`);
      }
    }
    writeFileSync(join(OUT, "results.json"), JSON.stringify({ env, results, summary, met, profiles }, null, 2));
    console.log(`P3 results: ${join(OUT, "results.json")}`);
  } finally {
    await server.stop();
  }
});
