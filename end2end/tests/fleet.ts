// Helpers for driving a real nixdeck: the REST API as an admin, and real agent processes.
import { APIRequestContext, expect, Page, request } from "@playwright/test";
import { ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const BASE = process.env.BASE_URL ?? "http://127.0.0.1:3900";
export const ADMIN_PASSWORD = process.env.NIXDECK_ADMIN_PASSWORD ?? "";
const AGENT_BIN = process.env.NIXDECK_AGENT_BIN ?? join(__dirname, "../../target/debug/nixdeck-agent");
const SERVER_BIN = process.env.NIXDECK_SERVER_BIN ?? join(__dirname, "../../target/debug/nixdeck");
export const SITE_ROOT = join(__dirname, "../../target/site");
const FAKE_GITHUB_BIN = process.env.NIXDECK_FAKE_GITHUB_BIN ?? join(__dirname, "../../target/debug/fake-github");

export interface Admin {
  api: APIRequestContext;
  csrf: string;
}

export async function loginApi(base: string = BASE): Promise<Admin> {
  const api = await request.newContext({ baseURL: base });
  const r = await api.post("/api/login", { data: { username: "admin", password: ADMIN_PASSWORD } });
  expect(r.status()).toBe(200);
  const { csrf_token } = await r.json();
  return { api, csrf: csrf_token };
}

export interface NewHost {
  hostname: string;
  location?: string;
}

/** Creates a host through the REST API and returns its agent token. */
export async function createHost(admin: Admin, host: NewHost): Promise<string> {
  const r = await admin.api.post("/api/hosts", {
    headers: { "X-CSRF-Token": admin.csrf },
    data: { hostname: host.hostname, host_type: "nixos", location: host.location ?? null },
  });
  expect(r.status(), await r.text()).toBe(201);
  return (await r.json()).agent_token;
}

/** A real `nixdeck-agent` process for one host. */
export class Agent {
  private proc: ChildProcess | null = null;
  private readonly stateDir = mkdtempSync(join(tmpdir(), "nixdeck-agent-"));
  log = "";

  constructor(
    private readonly hostname: string,
    private readonly token: string,
    private readonly base: string = BASE,
    private readonly extraArgs: string[] = [],
  ) {}

  start(): void {
    const args = ["--url", this.base, "--hostname", this.hostname, "--state-dir", this.stateDir, ...this.extraArgs];
    this.proc = spawn(AGENT_BIN, args, {
      env: { ...process.env, NIXDECK_TOKEN: this.token, RUST_LOG: "info" },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const keep = (d: Buffer) => {
      this.log = (this.log + d.toString()).slice(-20_000);
    };
    this.proc.stdout?.on("data", keep);
    this.proc.stderr?.on("data", keep);
  }

  signal(sig: NodeJS.Signals): void {
    this.proc?.kill(sig);
  }

  async stop(sig: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill(sig);
    await exited;
    this.proc = null;
  }
}

/** A dashboard of a test's own, on its own port and database, that it may stop and restart. */
export class Server {
  private proc: ChildProcess | null = null;
  private readonly dir = mkdtempSync(join(tmpdir(), "nixdeck-server-"));
  log = "";

  constructor(
    readonly port: number,
    private readonly env: Record<string, string> = {},
  ) {}

  get base(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** The server process's pid (for its CPU time in /proc), once started. */
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  async start(): Promise<void> {
    this.proc = spawn(SERVER_BIN, [], {
      env: {
        ...process.env,
        NIXDECK_LISTEN: `127.0.0.1:${this.port}`,
        NIXDECK_DATABASE_URL: `sqlite://${this.dir}/nixdeck.db`,
        NIXDECK_ADMIN_PASSWORD: ADMIN_PASSWORD,
        NIXDECK_HEARTBEAT_INTERVAL_S: "2",
        NIXDECK_SITE_ROOT: SITE_ROOT,
        ...this.env,
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const keep = (d: Buffer) => {
      this.log = (this.log + d.toString()).slice(-20_000);
    };
    this.proc.stdout?.on("data", keep);
    this.proc.stderr?.on("data", keep);
    const deadline = Date.now() + 20_000;
    for (;;) {
      try {
        const r = await fetch(`${this.base}/healthz`);
        if (r.ok) return;
      } catch {
        // not up yet
      }
      if (Date.now() > deadline) throw new Error(`server did not start:\n${this.log}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    if (!proc || proc.exitCode !== null) return;
    const exited = new Promise((resolve) => proc.once("exit", resolve));
    proc.kill("SIGTERM");
    await exited;
    this.proc = null;
  }
}

/** An agent command config (TOML) whose commands are the given `sh -c` scripts. */
export function commandConfig(scripts: Record<string, string>): string {
  const dir = mkdtempSync(join(tmpdir(), "nixdeck-config-"));
  const path = join(dir, "agent.toml");
  const lines = Object.entries(scripts).map(([name, script]) => `${JSON.stringify(name)} = ["sh", "-c", ${JSON.stringify(script)}]`);
  writeFileSync(path, `[commands]\n${lines.join("\n")}\n`);
  return path;
}

/** Logs in through the page and waits until it is hydrated (buttons act only then). */
export async function loginUi(page: Page, base: string = BASE, user = "admin", password = ADMIN_PASSWORD): Promise<void> {
  await page.goto(`${base}/login`);
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await page.fill("input[name=username]", user);
  await page.fill("input[name=password]", password);
  await page.click("button[type=submit]");
  await expect(page).toHaveURL(`${base}/`);
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
}

/** Runs git with a fixed identity; its trimmed stdout. */
export function git(cwd: string, ...args: string[]): string {
  return execFileSync("git", ["-c", "user.name=nixdeck", "-c", "user.email=e2e@nixdeck.invalid", ...args], {
    cwd,
    encoding: "utf8",
  }).trim();
}

/**
 * A config repository (a real bare git repo) with `fake-github` serving GitHub's REST API
 * over it: merging a PR there moves the repo's branch, which the agents really fetch.
 */
export class FakeGitHub {
  readonly dir = mkdtempSync(join(tmpdir(), "nixdeck-gh-"));
  readonly origin = join(this.dir, "origin.git");
  private proc: ChildProcess | null = null;
  url = "";
  log = "";

  /**
   * main has flake.lock v1; branch `update-flake-lock` has v2. `prepare` writes more files
   * into the first commit (a flake), `preparePr` into the PR's; `locks` replaces the two
   * flake.lock texts (a lock Nix can read, for a real flake).
   */
  async start(
    opts: { prepare?: (work: string) => void; preparePr?: (work: string) => void; locks?: string[] } = {},
  ): Promise<void> {
    const work = join(this.dir, "work");
    const [lock1, lock2] = opts.locks ?? ['{"nodes":{"nixpkgs":{"rev":"v1"}},"version":7}\n', '{"nodes":{"nixpkgs":{"rev":"v2"}},"version":7}\n'];
    git(this.dir, "init", "-q", "--bare", "-b", "main", this.origin);
    git(this.dir, "init", "-q", "-b", "main", work);
    git(work, "remote", "add", "origin", this.origin);
    writeFileSync(join(work, "flake.lock"), lock1);
    opts.prepare?.(work);
    git(work, "add", ".");
    git(work, "commit", "-qm", "first");
    git(work, "push", "-q", "origin", "HEAD:main");
    git(work, "checkout", "-qb", "update-flake-lock");
    writeFileSync(join(work, "flake.lock"), lock2);
    opts.preparePr?.(work);
    git(work, "commit", "-qam", "flake.lock: update nixpkgs");
    git(work, "push", "-q", "origin", "update-flake-lock");
    this.proc = spawn(FAKE_GITHUB_BIN, ["--repo-dir", this.origin, "--owner", "acme", "--name", "nixcfg"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.proc.stderr?.on("data", (d: Buffer) => {
      this.log = (this.log + d.toString()).slice(-20_000);
    });
    this.url = await new Promise<string>((resolve, reject) => {
      let out = "";
      this.proc!.stdout!.on("data", (d: Buffer) => {
        out += d.toString();
        const m = out.match(/listening on (http:\/\/\S+)/);
        if (m) resolve(m[1]);
      });
      this.proc!.once("exit", (code) => reject(new Error(`fake-github exited with ${code}`)));
    });
  }

  /** The server environment that points the dashboard at this repo. */
  env(): Record<string, string> {
    return {
      NIXDECK_GITHUB_REPO: "acme/nixcfg",
      NIXDECK_GITHUB_API_URL: this.url,
      NIXDECK_DESIRED_POLL_S: "1",
      NIXDECK_PR_POLL_S: "1",
    };
  }

  head(): string {
    return git(this.origin, "rev-parse", "main");
  }

  /** A checkout of the config repo for one host's agent. */
  checkout(name: string): string {
    const dir = join(this.dir, `${name}-checkout`);
    git(this.dir, "clone", "-q", this.origin, dir);
    return dir;
  }

  async pr(body: Record<string, unknown>): Promise<void> {
    const r = await fetch(`${this.url}/_control/pr`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ head: "update-flake-lock", ...body }),
    });
    expect(r.status).toBe(201);
  }

  stop(): void {
    this.proc?.kill("SIGTERM");
  }
}

/**
 * A hand-driven agent link (Node 20 has no WebSocket client): it registers with whatever
 * the test says, e.g. another agent version, and sends frames on demand.
 */
export class RawAgent {
  private constructor(private readonly socket: Socket) {
    socket.on("data", () => {}); // the server's frames are not needed
    socket.on("error", () => {});
  }

  static connect(base: string, token: string): Promise<RawAgent> {
    const url = new URL("/ws/agent", base);
    return new Promise((resolve, reject) => {
      const req = httpRequest({
        host: url.hostname,
        port: url.port,
        path: url.pathname,
        headers: {
          Connection: "Upgrade",
          Upgrade: "websocket",
          "Sec-WebSocket-Key": randomBytes(16).toString("base64"),
          "Sec-WebSocket-Version": "13",
          Authorization: `Bearer ${token}`,
        },
      });
      req.on("upgrade", (_res, socket) => resolve(new RawAgent(socket)));
      req.on("response", (res) => reject(new Error(`no upgrade: HTTP ${res.statusCode}`)));
      req.on("error", reject);
      req.end();
    });
  }

  /** One masked text frame, as a client must send it. */
  send(message: unknown): void {
    const payload = Buffer.from(JSON.stringify(message));
    const mask = randomBytes(4);
    let header: Buffer;
    if (payload.length < 126) {
      header = Buffer.from([0x81, 0x80 | payload.length]);
    } else {
      header = Buffer.alloc(4);
      header[0] = 0x81;
      header[1] = 0x80 | 126;
      header.writeUInt16BE(payload.length, 2);
    }
    const body = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
    this.socket.write(Buffer.concat([header, mask, body]));
  }

  close(): void {
    this.socket.destroy();
  }
}
