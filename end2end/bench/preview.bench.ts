// The bulk preview figure of docs/BENCHMARKS.md, the page's half: HOSTS real agents on this
// machine (each with its own profile in a temp dir) run on the offline test flake; every
// host is at version 1, the config repo is at version 2. Time from the click on the bulk
// menu's Preview (every online host) until the fleet diff in the page lists the openssl
// change "on HOSTS hosts", and the dashboard process's CPU time meanwhile (/proc). The
// REST half (until every result is stored) is `STEPS=preview bench/nix.sh`. A benchmark:
// it prints figures and fails only when the page cannot be driven.
//
//   cd end2end && npx playwright test -c bench/playwright.bench.config.ts preview
//
// Knobs: PREVIEW_HOSTS (50), PREVIEW_PORT (3964).
import { expect, request, test } from "@playwright/test";
import { mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Admin, createHost, loginUi, Server } from "../tests/fleet";
import { flake, NixHost, V1, V2 } from "../tests/nix";

const HOSTS = Number(process.env.PREVIEW_HOSTS ?? 50);
const PORT = Number(process.env.PREVIEW_PORT ?? 3964);
const PASSWORD = "preview-bench-password";

async function login(base: string): Promise<Admin> {
  const api = await request.newContext({ baseURL: base });
  const r = await api.post("/api/login", { data: { username: "admin", password: PASSWORD } });
  expect(r.status()).toBe(200);
  return { api, csrf: (await r.json()).csrf_token };
}

/** User + system CPU time of a process, in ms. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1].split(" ");
  // utime and stime are fields 14 and 15 of stat, i.e. 12 and 13 after "pid (comm) ".
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}

test("bulk preview of the fleet: click → fleet diff shown", async ({ page }) => {
  test.setTimeout(15 * 60_000);
  const server = new Server(PORT, { NIXDECK_ADMIN_PASSWORD: PASSWORD, NIXDECK_MAX_SOCKETS_PER_USER: "64" });
  await server.start();
  const admin = await login(server.base);
  const names = Array.from({ length: HOSTS }, (_, i) => `pv-${String(i).padStart(3, "0")}`);
  const repo = mkdtempSync(join(tmpdir(), "nixdeck-flake-"));
  flake(repo, names, V1);
  const hosts = names.map((n) => new NixHost(n));
  try {
    for (const h of hosts) h.start(await createHost(admin, { hostname: h.name }), repo, server.base);
    await expect
      .poll(async () => (await (await admin.api.get("/api/hosts")).json()).filter((h: any) => h.online).length, {
        timeout: 120_000,
      })
      .toBe(HOSTS);
    // Every host at version 1, through the dashboard (one bulk switch).
    const sw = await admin.api.post("/api/bulk", {
      headers: { "X-CSRF-Token": admin.csrf },
      data: { command: "switch", host_ids: null },
    });
    expect(sw.status()).toBe(200);
    await expect
      .poll(
        async () =>
          (await (await admin.api.get("/api/hosts")).json()).filter((h: any) => h.generations.some((g: any) => g.current))
            .length,
        { timeout: 300_000 },
      )
      .toBe(HOSTS);
    flake(repo, names, V2);

    await loginUi(page, server.base, "admin", PASSWORD);
    await page.locator("#bulk-actions-menu > summary").click();
    const click = page.locator('#bulk-actions-menu button[data-command="preview"][data-scope="online"]');
    const cpu0 = cpuMs(server.pid!);
    const t0 = Date.now();
    await click.click();
    await expect(page.locator('[data-testid="diff-change"][data-package="openssl"]')).toContainText(
      `on ${HOSTS} hosts`,
      { timeout: 600_000 },
    );
    const took = Date.now() - t0;
    const cpu = cpuMs(server.pid!) - cpu0;
    console.log(
      `bulk preview of ${HOSTS} hosts: click → fleet diff shown ${took} ms; dashboard CPU ${cpu.toFixed(0)} ms ` +
        `(${((100 * cpu) / took).toFixed(1)} % of one core)`,
    );
  } finally {
    for (const h of hosts) await h.agent?.stop("SIGKILL");
    await server.stop();
  }
});
