// The host page (/hosts/{id}, linked from the hostname) with a real agent: its facts, the
// command history with exit codes, an old log opened in the log panel, the charts, token
// rotation; and the CPU sparkline in the dashboard's row. A Merge & Deploy's steps marked as
// the deploy's on the charts, and a past preview's diff opened from the history (real Nix).
import { expect, test } from "@playwright/test";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Agent, BASE, commandConfig, createHost, FakeGitHub, loginApi, loginUi, Server } from "./fleet";
import { flake, NixHost, run, V1, V2, waitOnline } from "./nix";

test("the host page shows a real agent's facts, its commands with exit codes, an old log and its charts", async ({ page }) => {
  const errors: string[] = [];
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("pageerror", (e) => errors.push(e.message));

  const admin = await loginApi();
  const hostname = `hp-${Date.now()}`;
  const config = commandConfig({
    pull: 'echo "pulled the first time"; echo "a warning" >&2',
    test: 'echo "checks failed"; exit 3',
  });
  const agent = new Agent(hostname, await createHost(admin, { hostname, location: "lab" }), BASE, ["--config", config]);
  agent.start();
  try {
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });

    // The row's sparkline: the last hour of CPU, drawn once the heartbeats are in.
    await expect(row.locator('[data-testid="sparkline"] path')).toHaveAttribute("d", /^M\d+ \d+/, { timeout: 20_000 });

    // Run two commands from the row, one failing with exit code 3.
    await row.locator("button.btn-pull").click();
    await expect(page.locator(".log-panel .log-status")).toHaveText("ok", { timeout: 15_000 });
    await row.locator("button.btn-test").click();
    await expect(page.locator(".log-panel .log-status")).toHaveText("error", { timeout: 15_000 });

    // The hostname links to the host's page (a lazily loaded route, navigated in the app).
    await row.locator("a.hostname").click();
    await expect(page).toHaveURL(`${BASE}/hosts/${hostname}`);
    const facts = page.locator(".host-facts");
    await expect(page.locator(".host-title")).toHaveText(hostname);
    await expect(facts.locator('[data-fact="status"]')).toContainText("online");
    await expect(facts.locator('[data-fact="location"]')).toHaveText("lab");
    await expect(facts.locator('[data-fact="agent"]')).toHaveText(/^\d+\.\d+\.\d+/);
    await expect(facts.locator('[data-fact="os"]')).not.toHaveText("—");
    for (const key of ["cpu", "ram", "swap", "disk"]) {
      await expect(facts.locator(`[data-fact="${key}"]`)).toHaveText(/^\d+%$/);
    }
    await expect(facts.locator('[data-fact="load"]')).toHaveText(/^\d+\.\d\d$/);
    // The compartments, each with what it checks.
    await expect(page.locator(".compartments-explained tbody tr")).toHaveCount(5);
    await expect(page.locator('.compartments-explained tr[data-compartment="git"] .compartment-meaning')).toContainText("config repository");

    // The history: newest first, status, exit code and who started it.
    const items = page.locator('[data-testid="history-item"]');
    await expect(items).toHaveCount(2);
    await expect(items.nth(0).locator(".history-command")).toHaveText("test");
    await expect(items.nth(0).locator(".history-status")).toHaveText("error");
    await expect(items.nth(0).locator('[data-testid="exit-code"]')).toHaveText("3");
    await expect(items.nth(0).locator(".history-by")).toHaveText("admin");
    await expect(items.nth(1).locator('[data-testid="exit-code"]')).toHaveText("0");
    await expect(items.nth(1).locator(".history-duration")).toHaveText(/^\d+s$/);

    // An old log opens in the log panel: the pull's, not the latest command's.
    await items.nth(1).locator('[data-testid="history-open"]').click();
    const past = page.locator('.log-panel [data-testid="past-log"]');
    await expect(past).toBeVisible();
    await expect(past.locator(".log-line").first()).toHaveText(/^\[\d\d:\d\d:\d\d\] pulled the first time$/);
    await expect(past.locator(".log-line.stderr")).toHaveText(/\[ERR\] a warning$/);
    const download = items.nth(1).locator("a.history-download");
    await expect(download).toHaveAttribute("href", /^\/api\/commands\/[^/]+\/log$/);

    // The charts: the last hour has points (the current minute's at least), commands are
    // marked on the same axis, and another range loads its own.
    const cpu = page.locator('figure.chart[data-chart="cpu"]');
    await expect(cpu).toHaveAttribute("data-points", /^[1-9]\d*$/, { timeout: 15_000 });
    await expect(cpu.locator("path.chart-line")).toHaveAttribute("d", /^M\d+ \d+/);
    await expect(cpu.locator("line.chart-mark")).toHaveCount(2);
    await page.locator('button.range[data-range="24h"]').click();
    await expect(page.locator('button.range[data-range="24h"]')).toHaveAttribute("aria-pressed", "true");
    await expect(page.locator('figure.chart[data-chart="ram"]')).toHaveAttribute("data-points", /^[1-9]\d*$/);

    // Live: a command started from the page shows in its history without a reload.
    await page.locator(".host-head button.btn-pull").click();
    await expect(items).toHaveCount(3, { timeout: 15_000 });

    // Edit host is the dashboard's dialog.
    await page.locator(".host-head button.btn-edit-host").click();
    await expect(page.locator('[data-testid="host-edit"]')).toBeVisible();
    await page.locator('[data-testid="host-edit"] button.cancel').click();

    // A new agent token, shown once; the agent's old token stops working.
    await page.locator("button.btn-rotate-token").click();
    await page.locator("button.btn-rotate-confirm").click();
    await expect(page.locator('[data-testid="new-agent-token"]')).toHaveText(/^\S{20,}$/);
    await expect(facts.locator('[data-fact="status"]')).toContainText("offline", { timeout: 30_000 });
  } finally {
    await agent.stop("SIGKILL");
  }
  expect(errors).toEqual([]);
});

test("a host page opened directly is rendered by the server and names an unknown host", async ({ page }) => {
  await loginUi(page);
  await page.goto(`${BASE}/hosts/no-such-host`);
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await expect(page.locator('[data-testid="host-missing"]')).toContainText("no-such-host");
});

test("a Merge & Deploy's pull and switch are marked as the deploy's on the host page's time axis", async ({ page }) => {
  const gh = new FakeGitHub();
  await gh.start();
  await gh.pr({ number: 5, title: "flake.lock: update nixpkgs", labels: ["dependencies"], mergeable: true });
  const server = new Server(Number(process.env.E2E_HOST_DEPLOY_PORT ?? Number(new URL(BASE).port) + 7), gh.env());
  await server.start();
  const admin = await loginApi(server.base);
  const name = "hp-deploy";
  const config = commandConfig({ switch: "echo activated", test: "echo checked" });
  const agent = new Agent(name, await createHost(admin, { hostname: name }), server.base, [
    "--repo-dir", gh.checkout(name), "--branch", "main", "--config", config,
  ]);
  agent.start();
  try {
    await waitOnline(admin, name);
    // A plain command first: its mark stays a plain one.
    expect((await run(admin, name, { command: "test" })).status).toBe("ok");
    const r = await admin.api.post("/api/deploy", {
      headers: { "X-CSRF-Token": admin.csrf },
      data: { pr_number: 5, host_ids: [name] },
    });
    expect(r.status(), await r.text()).toBe(202);
    const job = (await r.json()).job_id;
    await expect
      .poll(async () => (await (await admin.api.get(`/api/deploy/${job}`)).json()).phase, { timeout: 60_000 })
      .toBe("done");
    // The REST history names the deploy of its steps, and of nothing else.
    const history = await (await admin.api.get(`/api/hosts/${name}/commands`)).json();
    expect(history.map((c: any) => [c.command, c.deploy_id ?? null, c.deploy_pr ?? null])).toEqual([
      ["switch", job, 5],
      ["pull", job, 5],
      ["test", null, null],
    ]);

    await loginUi(page, server.base);
    await page.goto(`${server.base}/hosts/${name}`);
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    const cpu = page.locator('figure.chart[data-chart="cpu"]');
    await expect(cpu.locator("line.chart-mark")).toHaveCount(3, { timeout: 15_000 });
    const steps = cpu.locator("line.chart-mark--deploy");
    await expect(steps).toHaveCount(2);
    for (const i of [0, 1]) await expect(steps.nth(i)).toHaveAttribute("data-deploy", job);
    await expect(cpu.locator('line.chart-mark[data-command="test"]')).not.toHaveClass(/chart-mark--deploy/);
    await expect(cpu.locator('line.chart-mark[data-command="switch"] title')).toContainText(`Merge & Deploy of PR #5 (deploy ${job})`);
    // One link per deploy above the drawing, named by its PR, to the Deploys page.
    const link = cpu.locator("a.chart-deploy");
    await expect(link).toHaveCount(1);
    await expect(link).toHaveText("PR #5");
    await expect(link).toHaveAttribute("data-deploy", job);
    await expect(link).toHaveAttribute("title", `Merge & Deploy of PR #5 (deploy ${job}): pull, switch`);
    await link.click();
    await expect(page).toHaveURL(`${server.base}/deploys`);
    await expect(page.getByTestId("deploy-record").first().locator("h3")).toContainText("PR #5", { timeout: 15_000 });
  } finally {
    await agent.stop("SIGKILL");
    await server.stop();
    gh.stop();
  }
});

test("a past preview's stored diff opens from the host page's history in the page's diff panel", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const admin = await loginApi();
  const name = `hp-nix-${Date.now()}`;
  const repo = mkdtempSync(join(tmpdir(), "nixdeck-flake-"));
  flake(repo, [name], V1);
  const host = new NixHost(name);
  try {
    host.start(await createHost(admin, { hostname: name }), repo);
    await waitOnline(admin, name);
    expect((await run(admin, name, { command: "switch" })).status).toBe("ok");
    flake(repo, [name], V2);
    // The preview ends before the page is open: the page never saw it.
    const preview = await run(admin, name, { command: "preview" });
    expect(preview.status).toBe("ok");

    await loginUi(page);
    await page.goto(`${BASE}/hosts/${name}`);
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    const items = page.locator('[data-testid="history-item"]');
    await expect(items).toHaveCount(2);
    const panel = page.locator('[data-testid="diff-panel"]');
    await expect(panel).toHaveCount(0);
    // Only a preview that ended ok offers its diff.
    await expect(items.locator('[data-testid="history-diff"]')).toHaveCount(1);
    const item = page.locator(`[data-testid="history-item"][data-command-id="${preview.command_id}"]`);
    // Clicked again when the panel does not open: once in a full suite run (CI of
    // 2026-12-07) it stayed closed for 15 s after the click, with no notice shown, and
    // the spec passed alone and in the next full run. Not explained; a row redrawn under
    // the click (the history refetches when the host's live state moves) is the guess.
    await expect(async () => {
      await item.locator('[data-testid="history-diff"]').click();
      await expect(panel.locator('[data-testid="diff-change"][data-package="openssl"]')).toContainText("openssl 3.0.14 → 3.0.15", {
        timeout: 4_000,
      });
    }).toPass({ timeout: 20_000 });
    await expect(panel.locator('[data-testid="diff-change"][data-package="zlib"]')).toHaveAttribute("data-kind", "added");
    await expect(panel.locator(`[data-testid="diff-host"][data-host="${name}"]`)).toHaveAttribute("data-stale", "false");

    // A switch after it: the page drops the preview, and opened again it reads as stale.
    expect((await run(admin, name, { command: "switch" })).status).toBe("ok");
    await expect(items).toHaveCount(3, { timeout: 15_000 });
    await expect(panel).toHaveCount(0);
    await expect(async () => {
      await item.locator('[data-testid="history-diff"]').click();
      await expect(panel.locator(`[data-testid="diff-host"][data-host="${name}"]`)).toHaveAttribute("data-stale", "true", {
        timeout: 4_000,
      });
    }).toPass({ timeout: 20_000 });
    await expect(panel.locator('[data-testid="diff-switch-host"]')).toBeDisabled();
  } finally {
    await host.agent?.stop("SIGKILL");
  }
  expect(errors).toEqual([]);
});
