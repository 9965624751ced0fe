// Nix-native switching from the page, on real Nix (Debian's nix-bin): real agents build the
// offline test flake (`test-flake`, testkit::nix), set profiles in temp dirs, activate, pass
// or fail their health gate and roll back. Previews and the fleet diff, a switch started
// from a preview, the generations list and a rollback to one, a rolled-back switch, and a
// deploy that halts after its canary rolled back.
import { expect, Page, test } from "@playwright/test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Admin, createHost, FakeGitHub, loginApi, loginUi, Server } from "./fleet";
import { finished, flake, NixHost, run, V1, V2, V3, waitOnline } from "./nix";

/** The host's newest command of `kind` (other than `not`, an earlier one), once it ended. */
async function latest(admin: Admin, host: string, kind: string, not = ""): Promise<any> {
  let id = "";
  await expect
    .poll(async () => {
      const list = await (await admin.api.get(`/api/hosts/${host}/commands?limit=1`)).json();
      id = list[0]?.command === kind && list[0].command_id !== not ? list[0].command_id : "";
      return id;
    })
    .not.toBe("");
  return finished(admin, id);
}

async function openMenu(page: Page, host: string): Promise<void> {
  await page.locator(`tr[data-host-id="${host}"] details.host-menu > summary`).click();
}

test("a preview of the selection shows one fleet diff; Switch to previewed activates exactly that build", async ({ page }) => {
  const admin = await loginApi();
  const names = ["nix-pa", "nix-pb"];
  const repo = mkdtempSync(join(tmpdir(), "nixdeck-flake-"));
  flake(repo, names, V1);
  const hosts = names.map((n) => new NixHost(n));
  try {
    for (const h of hosts) {
      h.start(await createHost(admin, { hostname: h.name }), repo);
      await waitOnline(admin, h.name);
      expect((await run(admin, h.name, { command: "switch" })).status).toBe("ok");
      h.bootCurrent();
    }
    flake(repo, names, V2);
    await loginUi(page);
    for (const n of names) await page.locator(`tr[data-host-id="${n}"] input.select-host`).click();
    await page.locator("#bulk-actions-menu > summary").click();
    await page.locator('#bulk-actions-menu button[data-command="preview"][data-scope="selected"]').click();

    const panel = page.locator('[data-testid="diff-panel"]');
    const openssl = panel.locator('[data-testid="diff-change"][data-package="openssl"]');
    await expect(openssl).toContainText("openssl 3.0.14 → 3.0.15 on 2 hosts", { timeout: 30_000 });
    await expect(openssl).toHaveAttribute("data-kind", "upgraded");
    await expect(panel.locator('[data-testid="diff-change"][data-package="zlib"]')).toHaveAttribute("data-kind", "added");
    await expect(panel.locator('[data-testid="diff-change"][data-package="curl"]')).toHaveAttribute("data-kind", "removed");
    await expect(panel.locator('[data-testid="diff-reboot"]')).toContainText("reboot needed on 2");
    await expect(panel.locator('[data-testid="diff-switch-all"]')).toContainText("(2)");
    const preview = await latest(admin, "nix-pa", "preview");
    expect(preview.result.diff.closure_bytes_after).not.toBe(preview.result.diff.closure_bytes_before);

    // The checkout moves on; the switch started from the preview still activates the
    // previewed build, not a new one.
    flake(repo, names, V3);
    await panel.locator('[data-testid="diff-switch-host"][data-host="nix-pa"]').click();
    await expect(page.locator(".modal h2")).toHaveText("Switch nix-pa to its preview");
    await page.locator(".modal button.confirm").click();
    const sw = await latest(admin, "nix-pa", "switch");
    expect(sw.status).toBe("ok");
    expect(sw.result.store_path).toBe(preview.result.store_path);
    expect(sw.result.store_path).toContain("26.05.2");
    // The switched host's preview is used up; the other one's stays.
    await expect(panel.locator('[data-testid="diff-host"][data-host="nix-pa"]')).toHaveCount(0);
    await expect(panel.locator('[data-testid="diff-host"][data-host="nix-pb"]')).toBeVisible();
    await expect(page.locator('tr[data-host-id="nix-pa"] .hostname[data-reboot-needed]')).toBeVisible();
  } finally {
    for (const h of hosts) await h.agent?.stop("SIGKILL");
  }
});

test("Generations… lists the profile's generations and rolls back to a chosen one", async ({ page }) => {
  const admin = await loginApi();
  const h = new NixHost("nix-gen");
  const repo = mkdtempSync(join(tmpdir(), "nixdeck-flake-"));
  flake(repo, [h.name], V1);
  try {
    h.start(await createHost(admin, { hostname: h.name }), repo);
    await waitOnline(admin, h.name);
    expect((await run(admin, h.name, { command: "switch" })).status).toBe("ok");
    h.bootCurrent();
    flake(repo, [h.name], V2);
    expect((await run(admin, h.name, { command: "switch" })).status).toBe("ok");

    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${h.name}"]`);
    // Booted 6.6.1, running 6.6.2.
    await expect(row.locator(".hostname[data-reboot-needed]")).toBeVisible();
    await openMenu(page, h.name);
    await row.locator("button[data-command=generations]").click();
    const panel = page.locator(`[data-testid="generations-panel"][data-host="${h.name}"]`);
    const rows = panel.locator('[data-testid="generation"]');
    await expect(rows).toHaveCount(2);
    await expect(rows.first()).toHaveAttribute("data-generation", "2");
    await expect(rows.first()).toHaveAttribute("data-current", "true");
    await expect(rows.first().locator(".generation-name")).toContainText("nixos-system-nix-gen-26.05.2");
    await expect(rows.nth(1)).toHaveAttribute("data-booted", "true");
    await panel.locator('[data-testid="generation-rollback"][data-generation="1"]').click();
    await expect(page.locator(".modal p")).toHaveText(`Switch ${h.name} to generation 1 now?`);
    await page.locator(".modal button.confirm").click();
    const rb = await latest(admin, h.name, "rollback");
    expect(rb.status).toBe("ok");
    expect(rb.result.generation).toBe(1);
    // The agent reports the profile after the rollback; the page follows without a reload.
    await expect(panel.locator('[data-testid="generation"][data-generation="1"]')).toHaveAttribute("data-current", "true");
    await expect(row.locator(".hostname[data-reboot-needed]")).toHaveCount(0);
  } finally {
    await h.agent?.stop("SIGKILL");
  }
});

test("a switch that fails its health check rolls back and reads as a failure everywhere", async ({ page }) => {
  const admin = await loginApi();
  const h = new NixHost("nix-rb");
  const repo = mkdtempSync(join(tmpdir(), "nixdeck-flake-"));
  const health = mkdtempSync(join(tmpdir(), "nixdeck-health-"));
  writeFileSync(join(health, h.name), "");
  flake(repo, [h.name], V1, { healthDir: health });
  try {
    h.start(await createHost(admin, { hostname: h.name }), repo);
    await waitOnline(admin, h.name);
    const first = await run(admin, h.name, { command: "switch" });
    expect(first.status).toBe("ok");
    flake(repo, [h.name], V2, { healthDir: health });
    rmSync(join(health, h.name));

    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${h.name}"]`);
    await row.locator("button.btn-switch").click();
    const confirm = page.locator(".modal button.confirm");
    if (await confirm.isVisible()) await confirm.click();
    const done = await latest(admin, h.name, "switch", first.command_id);
    expect(done.status).toBe("rolled_back");
    expect(done.result.generation).toBe(1);
    const log = page.locator(".log-panel");
    await expect(log.locator(".log-status")).toHaveText("rolled back");
    await expect(log.locator(".log-lines")).toContainText("nix-rb is unhealthy");
    await expect(page.locator(".notice.error")).toContainText(`${h.name}: rolled back`);
    await expect(row.locator('[data-compartment="system"] .compartment-indicator--error')).toBeVisible();
  } finally {
    await h.agent?.stop("SIGKILL");
  }
});

test("Merge & Deploy with a canary: the canary fails its health gate, rolls back, and the deploy halts", async ({ page }) => {
  const names = ["dn-canary", "dn-b", "dn-c"];
  const health = mkdtempSync(join(tmpdir(), "nixdeck-health-"));
  for (const n of names) writeFileSync(join(health, n), "");
  const gh = new FakeGitHub();
  await gh.start({
    prepare: (work) => flake(work, names, V1, { healthDir: health, commit: false }),
    locks: ["v1", "v2"].map((v) => JSON.stringify({ nodes: { root: {} }, root: "root", version: 7, "nixdeck-test": v }) + "\n"),
  });
  await gh.pr({ number: 9, title: "flake.lock: Update", labels: ["dependencies"], mergeable: true });
  const server = new Server(Number(process.env.E2E_NIX_DEPLOY_PORT ?? 3903), gh.env());
  await server.start();
  const admin = await loginApi(server.base);
  const hosts = names.map((n) => new NixHost(n));
  try {
    for (const h of hosts) {
      h.start(await createHost(admin, { hostname: h.name }), gh.checkout(h.name), server.base);
      await waitOnline(admin, h.name);
      expect((await run(admin, h.name, { command: "switch" })).status).toBe("ok");
    }
    // The update breaks the canary.
    rmSync(join(health, "dn-canary"));

    await loginUi(page, server.base);
    await expect(page.getByTestId("pending-pr").first()).toContainText("PR #9", { timeout: 15_000 });
    await page.locator("#bulk-actions-menu > summary").click();
    await page.getByTestId("menu-merge-deploy").click();
    await page.getByTestId("deploy-options").locator("summary").click();
    await page.getByTestId("deploy-canary").fill("dn-canary");
    await page.getByTestId("deploy-batch-size").fill("1");
    await page.locator(".modal button.confirm").click();

    const panel = page.getByTestId("deploy-panel");
    await expect(panel).toHaveAttribute("data-phase", "failed", { timeout: 60_000 });
    const chip = (n: string) => panel.locator(`[data-testid="deploy-host"][data-host="${n}"]`);
    await expect(chip("dn-canary")).toHaveAttribute("data-state", "rolled_back");
    await expect(chip("dn-b")).toHaveAttribute("data-state", "skipped");
    await expect(chip("dn-c")).toHaveAttribute("data-state", "skipped");
    const history = await (await admin.api.get("/api/hosts/dn-canary/commands?limit=1")).json();
    expect(history[0].status).toBe("rolled_back");
    // The others were never touched: still on their first generation.
    for (const n of ["dn-b", "dn-c"]) {
      const h = (await (await admin.api.get("/api/hosts")).json()).find((x: any) => x.id === n);
      expect(h.generations.filter((g: any) => g.current).map((g: any) => g.number)).toEqual([1]);
    }
  } finally {
    for (const h of hosts) await h.agent?.stop("SIGKILL");
    await server.stop();
    gh.stop();
  }
});

test("Merge & Deploy previewing first: the PR's diff per host, nothing merged until confirmed, then the rollout", async ({ page }) => {
  const names = ["dp-a", "dp-b"];
  const gh = new FakeGitHub();
  await gh.start({
    prepare: (work) => flake(work, names, V1, { commit: false }),
    // An update that moves packages, as a nixpkgs bump does (flake.nix is allowed below).
    preparePr: (work) => flake(work, names, V2, { commit: false }),
    locks: ["v1", "v2"].map((v) => JSON.stringify({ nodes: { root: {} }, root: "root", version: 7, "nixdeck-test": v }) + "\n"),
  });
  await gh.pr({ number: 11, title: "flake.lock: Update", labels: ["dependencies"], mergeable: true });
  const server = new Server(Number(process.env.E2E_NIX_DEPLOY_PORT ?? 3903) + 1, {
    ...gh.env(),
    NIXDECK_PR_ALLOWED_FILES: "flake.lock,flake.nix",
  });
  await server.start();
  const admin = await loginApi(server.base);
  const hosts = names.map((n) => new NixHost(n));
  try {
    for (const h of hosts) {
      h.start(await createHost(admin, { hostname: h.name }), gh.checkout(h.name), server.base);
      await waitOnline(admin, h.name);
      expect((await run(admin, h.name, { command: "switch" })).status).toBe("ok");
    }
    const before = gh.head();

    await loginUi(page, server.base);
    await expect(page.getByTestId("pending-pr").first()).toContainText("PR #11", { timeout: 15_000 });
    await page.locator("#bulk-actions-menu > summary").click();
    await page.getByTestId("menu-merge-deploy").click();
    await page.getByTestId("deploy-options").locator("summary").click();
    await page.getByTestId("deploy-preview").check();
    await expect(page.locator(".modal")).toContainText("Nothing is merged until you confirm.");
    await page.locator(".modal button.confirm").click();

    const panel = page.getByTestId("deploy-panel");
    await expect(panel).toHaveAttribute("data-phase", "awaiting_confirmation", { timeout: 60_000 });
    await expect(panel.locator(".deploy-phase")).toHaveText("Review the changes, then confirm");
    const diff = panel.getByTestId("deploy-diff");
    const openssl = diff.locator('[data-testid="diff-change"][data-package="openssl"]');
    await expect(openssl).toContainText("openssl 3.0.14 → 3.0.15 on 2 hosts");
    for (const n of names) await expect(diff.locator(`[data-testid="diff-host"][data-host="${n}"]`)).toBeVisible();
    // An unmerged PR's build is never offered as a switch.
    for (const id of ["diff-switch-host", "diff-switch-all", "diff-dismiss-host", "diff-clear"]) {
      await expect(page.getByTestId(id)).toHaveCount(0);
    }
    await expect(page.getByTestId("diff-panel")).toHaveCount(0);
    // Nothing merged, nothing switched.
    expect(gh.head()).toBe(before);
    for (const n of names) {
      const h = (await (await admin.api.get("/api/hosts")).json()).find((x: any) => x.id === n);
      expect(h.generations.filter((g: any) => g.current).map((g: any) => g.number)).toEqual([1]);
    }
    // A page opened now shows the same diff (read back through the previews' results).
    await page.reload();
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    await expect(openssl).toContainText("on 2 hosts");

    await panel.getByTestId("deploy-confirm").click();
    await expect(panel).toHaveAttribute("data-phase", "done", { timeout: 60_000 });
    for (const n of names) {
      await expect(panel.locator(`[data-testid="deploy-host"][data-host="${n}"]`)).toHaveAttribute("data-state", "ok");
    }
    await expect(diff).toHaveCount(0);
    expect(gh.head()).not.toBe(before);
    for (const n of names) {
      const sw = await latest(admin, n, "switch");
      expect(sw.status).toBe("ok");
      expect(sw.result.store_path).toContain("26.05.2");
    }
  } finally {
    for (const h of hosts) await h.agent?.stop("SIGKILL");
    await server.stop();
    gh.stop();
  }
});
