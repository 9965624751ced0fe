// Real Nix for the Playwright suite and the browser benches: the offline test flake
// (`test-flake`, testkit::nix) and a host whose real agent switches a profile in a temp dir.
import { expect } from "@playwright/test";
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readlinkSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Admin, Agent, BASE } from "./fleet";

const TEST_FLAKE = process.env.NIXDECK_TEST_FLAKE_BIN ?? join(__dirname, "../../target/debug/test-flake");
// The agents pass their environment on to nix: the test settings of a machine with no
// network, no daemon and no nixbld group (never the product's defaults).
process.env.NIX_CONFIG = "experimental-features = nix-command flakes\nsandbox = false\nsubstituters =\nbuild-users-group =\n";

export interface Version {
  version: string;
  packages: string[];
  kernel: string;
}
export const V1: Version = { version: "26.05.1", packages: ["openssl=3.0.14", "curl=8.1"], kernel: "6.6.1" };
export const V2: Version = { version: "26.05.2", packages: ["openssl=3.0.15", "zlib=1.3", "jq=1.7"], kernel: "6.6.2" };
export const V3: Version = { version: "26.05.3", packages: ["openssl=3.0.16", "zlib=1.3"], kernel: "6.6.2" };

/** Writes the test flake for `hosts` at `v` into `dir`; commits unless `commit` is false. */
export function flake(dir: string, hosts: string[], v: Version, opts: { healthDir?: string; commit?: boolean } = {}): void {
  const args = [dir, "--version", v.version, "--kernel", v.kernel];
  for (const h of hosts) args.push("--host", h);
  for (const p of v.packages) args.push("--package", p);
  if (opts.healthDir) args.push("--health-dir", opts.healthDir);
  if (opts.commit !== false) args.push("--commit", `v${v.version}`);
  execFileSync(TEST_FLAKE, args, { stdio: ["ignore", "pipe", "inherit"] });
}

/** A host's machine: profile and "booted system" in a temp dir, and its real agent. */
export class NixHost {
  readonly dir = mkdtempSync(join(tmpdir(), "nixdeck-nixhost-"));
  readonly profile = join(this.dir, "profiles", "system");
  readonly booted = join(this.dir, "booted-system");
  agent!: Agent;

  constructor(readonly name: string) {
    mkdirSync(join(this.dir, "profiles"));
  }

  start(token: string, repo: string, base: string = BASE, extra: string[] = []): void {
    this.agent = new Agent(this.name, token, base, [
      "--repo-dir", repo,
      "--system-profile", this.profile,
      "--current-system", this.profile,
      "--booted-system", this.booted,
      "--confirm-timeout-s", "15",
      ...extra,
    ]);
    this.agent.start();
  }

  /** "Boots" the current generation: the booted system is what the profile is now. */
  bootCurrent(): void {
    const target = readlinkSync(join(this.dir, "profiles", readlinkSync(this.profile)));
    rmSync(this.booted, { force: true });
    symlinkSync(target, this.booted);
  }
}

export async function waitOnline(admin: Admin, host: string): Promise<void> {
  await expect
    .poll(async () => (await (await admin.api.get("/api/hosts")).json()).find((h: any) => h.id === host)?.online, {
      timeout: 20_000,
    })
    .toBe(true);
}

/** Runs a command through REST and waits for its end; its `GET /api/commands/{id}`. */
export async function run(admin: Admin, host: string, body: Record<string, unknown>): Promise<any> {
  const r = await admin.api.post(`/api/hosts/${host}/commands`, { headers: { "X-CSRF-Token": admin.csrf }, data: body });
  expect(r.status(), await r.text()).toBe(202);
  return finished(admin, (await r.json()).command_id);
}

export async function finished(admin: Admin, id: string): Promise<any> {
  let detail: any = null;
  await expect
    .poll(
      async () => {
        detail = await (await admin.api.get(`/api/commands/${id}`)).json();
        return detail.status;
      },
      { timeout: 60_000 },
    )
    .not.toMatch(/^(queued|running)$/);
  return detail;
}
