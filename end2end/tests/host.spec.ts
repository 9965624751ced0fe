// The host page (/hosts/{id}, linked from the hostname) with a real agent: its facts, the
// command history with exit codes, an old log opened in the log panel, the charts, token
// rotation; and the CPU sparkline in the dashboard's row.
import { expect, test } from "@playwright/test";
import { Agent, BASE, commandConfig, createHost, loginApi, loginUi } from "./fleet";

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
