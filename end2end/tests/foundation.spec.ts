// Foundation slice: one host's heartbeat travels agent -> hub -> browser store -> DOM.
import { expect, Page, test } from "@playwright/test";
import { appendFileSync, cpSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ADMIN_PASSWORD, Agent, BASE, createHost, loginApi, loginUi, Server, SITE_ROOT } from "./fleet";

/** Collects console errors, page errors and failed requests, to assert there were none. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("response", (r) => {
    if (r.status() >= 400) errors.push(`HTTP ${r.status()} ${r.url()}`);
  });
  return errors;
}


test("wrong password is refused inline, without a reload", async ({ page }) => {
  const errors = watchErrors(page);
  // Sockets the page opens, to check that the login page's warm-up opens none.
  await page.addInitScript(() => {
    const w = window as any;
    const Native = WebSocket;
    w.__sockets = 0;
    w.WebSocket = function (url: string, protocols?: string | string[]) {
      w.__sockets++;
      return new Native(url, protocols);
    } as any;
    Object.assign(w.WebSocket, Native);
    w.WebSocket.prototype = Native.prototype;
  });
  const resp = await page.goto("/login");
  // A CSP without inline scripts except the nonce'd hydration script, which still runs.
  const csp = resp?.headers()["content-security-policy"] ?? "";
  const nonce = /script-src 'self' 'nonce-([0-9a-f]+)'/.exec(csp)?.[1];
  expect(nonce, csp).toBeTruthy();
  expect(csp).toContain("frame-ancestors 'none'");
  await expect(page.locator(`script[nonce]`).first()).toBeAttached();
  await page.fill("input[name=username]", "admin");
  await page.fill("input[name=password]", "not-the-password");
  // Wait for hydration, so the form posts JSON and shows the error inline.
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await page.click("button[type=submit]");
  await expect(page.locator(".form-error")).toHaveText("Wrong username or password.");
  await expect(page).toHaveURL(/\/login$/);
  // Meanwhile the login page built the dashboard once, detached, to get its code compiled
  // (app/src/warm_up.rs): it left nothing in the page, opened no socket, raised nothing.
  await page.waitForFunction(() => (window as any).__nixdeck_warmed_up > 0);
  expect(await page.locator("tr.host-row, .topbar, .host-table").count()).toBe(0);
  expect(await page.evaluate(() => (window as any).__sockets)).toBe(0);
  expect(errors.filter((e) => !/\/api\/login|status of 401/.test(e))).toEqual([]);
  // The right password goes straight into the dashboard without reloading the app (the
  // marker set on the login page survives), with the session's CSRF token and role in
  // place as a server-rendered page has them.
  await page.evaluate(() => ((window as any).__same_page = true));
  await page.fill("input[name=password]", ADMIN_PASSWORD);
  await page.click("button[type=submit]");
  await expect(page).toHaveURL(/\/$/);
  await expect(page.locator("summary").filter({ hasText: "Bulk actions" })).toBeVisible();
  expect(await page.evaluate(() => (window as any).__same_page)).toBe(true);
  expect(await page.evaluate(() => (window as any).__sockets)).toBe(1);
  // (The commands, refresh and deploy tests exercise both through loginUi.)
  const csrf = await page.locator("meta[name=csrf-token]").getAttribute("content");
  expect(csrf).toMatch(/^[0-9a-f]{16,}$/);
  await expect(page.locator("meta[name=viewer-role]")).toHaveAttribute("content", "admin");
  // Loaded afresh, the page comes rendered by the server (no "Loading…") and hydrates.
  await page.reload();
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await expect(page.locator(".fleet-count")).toHaveText(/^\d+\/\d+ online$/);
  await page.locator("summary").filter({ hasText: "Bulk actions" }).click();
  await expect(page.locator('button[data-command="pull"][data-scope="online"]')).toBeVisible();
});

test("a live host: online, ticking, offline when its agent stops or hangs, back when it returns", async ({ page }) => {
  const errors = watchErrors(page);
  const admin = await loginApi();
  const hostname = `e2e-${Date.now()}`;
  const hostile = `<img src=x onerror="window.__pwned=1">`;
  const token = await createHost(admin, { hostname, location: hostile });
  const agent = new Agent(hostname, token);
  agent.start();

  try {
    // The server-rendered HTML already holds the row: no empty flash before hydration.
    const html = await (await admin.api.get("/")).text();
    expect(html).toContain(`data-host-id="${hostname}"`);

    const sockets: string[] = [];
    page.on("websocket", (ws) => sockets.push(new URL(ws.url()).pathname));
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    const indicator = row.locator(".status-indicator");
    await expect(indicator).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    await expect(page.locator(".link-state")).toHaveAttribute("data-state", "connected");
    // The link opened as the login succeeded (so the snapshot travels while the page is
    // built) is the one the dashboard reads: one socket, not a second.
    expect(sockets).toEqual(["/ws"]);

    // Hostile text from the API is shown as text, never run as markup.
    await expect(row.locator(".location")).toHaveText(hostile);
    expect(await page.evaluate(() => (window as any).__pwned)).toBeUndefined();

    // Metrics arrive and last-seen changes without a reload.
    await expect(row.locator('[data-metric="cpu"]')).toHaveText(/^CPU \d+%$/);
    await expect(row.locator('[data-metric="ram"]')).toHaveText(/^RAM \d+%$/);
    const seen = row.locator('[data-cell="last-seen"]');
    const live = async () => `${await row.locator(".cell-metrics").textContent()} | ${await seen.textContent()}`;
    const before = await live();
    await expect.poll(live, { timeout: 8_000 }).not.toBe(before);
    await expect(page.locator(".fleet-count")).toContainText("1/");

    // A clean stop: the socket closes and the host is offline at once.
    await agent.stop("SIGTERM");
    await expect(indicator).toHaveClass(/\bstatus-offline\b/, { timeout: 15_000 });
    await expect(row).toHaveClass(/\bhost-offline\b/);
    // With no more heartbeats, last-seen keeps ticking in the browser.
    const age = async () => Number(/(\d+)s ago/.exec((await seen.textContent()) ?? "")?.[1] ?? -1);
    const stoppedAt = await age();
    await expect.poll(age, { timeout: 6_000 }).toBeGreaterThanOrEqual(stoppedAt + 2);

    // Back again.
    agent.start();
    await expect(indicator).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });

    // A hung agent (SIGSTOP) keeps its socket open but sends nothing: offline after
    // three missed heartbeats.
    agent.signal("SIGSTOP");
    await expect(indicator).toHaveClass(/\bstatus-offline\b/, { timeout: 15_000 });
    agent.signal("SIGCONT");
    await expect(indicator).toHaveClass(/\bstatus-ripple\b/, { timeout: 20_000 });
  } finally {
    agent.signal("SIGCONT");
    await agent.stop("SIGKILL");
  }
  expect(errors, `agent log:\n${agent.log}`).toEqual([]);
});

test("logging out ends the session: the dashboard then redirects to login", async ({ page }) => {
  const errors = watchErrors(page);
  await loginUi(page);
  await expect(page.locator(".link-state")).toHaveAttribute("data-state", "connected");
  await page.click("button.logout");
  await expect(page).toHaveURL(/\/login$/);
  await page.goto("/");
  await expect(page).toHaveURL(/\/login$/);
  expect(errors).toEqual([]);
});

test("a dashboard restart: the footer shows the lost link, then the page resyncs by itself", async ({ page }) => {
  const server = new Server(Number(process.env.E2E_SPARE_PORT ?? 3901));
  await server.start();
  const errors = watchErrors(page);
  const admin = await loginApi(server.base);
  const hostname = `restart-${Date.now()}`;
  const agent = new Agent(hostname, await createHost(admin, { hostname }), server.base);
  agent.start();
  try {
    await loginUi(page, server.base);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    await expect(page.locator(".link-state")).toHaveAttribute("data-state", "connected");
    // The lazy parts are fetched a moment after the page starts; stopping the dashboard
    // before they are all here would only show the browser's fetch errors.
    await page.waitForFunction(() => (window as any).__nixdeck_preloaded === true);

    await server.stop();
    await expect(page.locator(".link-state")).toHaveAttribute("data-state", "disconnected");
    await expect(page.locator(".link-state")).toContainText("retrying");
    // The last known state stays on screen while the link is down.
    await expect(row).toBeVisible();

    await server.start();
    await expect(page.locator(".link-state")).toHaveAttribute("data-state", "connected", { timeout: 30_000 });
    // The agent reconnects too, and the resynced page shows it online without a reload.
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 60_000 });
  } finally {
    await agent.stop("SIGKILL");
    await server.stop();
  }
  // While the dashboard was down, Chromium reports the failed socket attempts itself.
  const unexpected = errors.filter((e) => !/WebSocket connection to .* failed/.test(e));
  expect(unexpected, server.log).toEqual([]);
});

test("an upgrade while a page is open: the page says so and loads the new build, never mixing in its chunks", async ({ page }) => {
  // The site is copied, so the test can "upgrade" it: a custom section appended to the wasm
  // makes another build that is still valid wasm.
  const site = mkdtempSync(join(tmpdir(), "nixdeck-site-"));
  cpSync(SITE_ROOT, site, { recursive: true });
  const upgrade = async () => {
    await server.stop();
    appendFileSync(join(site, "pkg/nixdeck.wasm"), Buffer.from([0, 5, 4, 0x6e, 0x78, 0x64, 0x6b]));
    await server.start();
  };
  const server = new Server(Number(process.env.E2E_SPARE_PORT ?? 3901) + 1, { NIXDECK_SITE_ROOT: site });
  await server.start();
  try {
    await loginUi(page, server.base);
    await expect(page.locator(".link-state")).toHaveAttribute("data-state", "connected");
    await expect(page.getByTestId("stale-build")).toHaveCount(0);

    await upgrade();
    await expect(page.getByTestId("stale-build")).toBeVisible({ timeout: 30_000 });
    // A link inside the app becomes a full page load (the router would fetch the new
    // build's page chunk into this page's old code).
    let loaded = page.waitForEvent("load");
    await page.click("a.account-link[href='/users']");
    await loaded;
    await expect(page).toHaveURL(`${server.base}/users`);
    await page.goto(`${server.base}/`);
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    await expect(page.locator(".link-state")).toHaveAttribute("data-state", "connected");
    await expect(page.getByTestId("stale-build")).toHaveCount(0);

    // A view whose chunk was never loaded here reloads the page into the new build.
    await upgrade();
    await expect(page.getByTestId("stale-build")).toBeVisible({ timeout: 30_000 });
    loaded = page.waitForEvent("load");
    await page.click("button.btn-add-host");
    await loaded;
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    await expect(page.getByTestId("stale-build")).toHaveCount(0);
    await page.click("button.btn-add-host");
    await expect(page.locator(".modal.add-host")).toBeVisible();
  } finally {
    await server.stop();
  }
});
