// The dashboard's parts: cards on small screens, refresh and its failures, the ⋮ menu.
import { expect, Page, test } from "@playwright/test";
import { Agent, BASE, commandConfig, createHost, loginApi, loginUi, RawAgent } from "./fleet";


async function liveHost(prefix: string): Promise<{ hostname: string; agent: Agent }> {
  const admin = await loginApi();
  const hostname = `${prefix}-${Date.now()}`;
  const agent = new Agent(hostname, await createHost(admin, { hostname }));
  agent.start();
  return { hostname, agent };
}

test("compartments read at a glance: a name and a state word each, and an accessible name", async ({ page }) => {
  const { hostname, agent } = await liveHost("words");
  try {
    await loginUi(page);
    const row = page.locator(`tr.host-row[data-host-id="${hostname}"]`);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    const parts = row.locator(".update-compartment");
    await expect(parts.locator(".compartment-name")).toHaveText(["agent", "git", "lock", "system", "tests"]);
    for (const code of await parts.locator(".compartment-code").allTextContents()) {
      expect(["ok", "behind", "error", "unknown", "…"]).toContain(code);
    }
    await expect(row.locator('[data-compartment="agent"] .compartment-code')).toHaveText("ok");
    await expect(row.locator('[data-compartment="agent"]')).toHaveAttribute("aria-label", /^Agent: ok/);
    // A state change keeps the pill's width: the word has the width of the longest one.
    const widths = await parts.evaluateAll((els) => els.map((e) => (e as HTMLElement).querySelector(".compartment-code")!.getBoundingClientRect().width));
    expect(Math.min(...widths)).toBeCloseTo(Math.max(...widths), 0);
  } finally {
    await agent.stop("SIGKILL");
  }
});

test("the table's columns stay put before, during and after a command", async ({ page }) => {
  const admin = await loginApi();
  const hostname = `steady-${Date.now()}`;
  const config = commandConfig({ "pull-switch": "echo switching; sleep 3; echo done" });
  const agent = new Agent(hostname, await createHost(admin, { hostname }), BASE, ["--config", config]);
  agent.start();
  try {
    await page.setViewportSize({ width: 1600, height: 900 });
    await loginUi(page);
    // This host alone, so that only its own row decides the widths.
    await page.locator("input.host-filter").fill(hostname);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    // Relative to the row: the menu's click may scroll the table sideways.
    const columns = () =>
      row.locator("td").evaluateAll((cells) => {
        const left = cells[0].parentElement!.getBoundingClientRect().left;
        return cells.map((c) => Math.round(c.getBoundingClientRect().left - left));
      });
    const before = await columns();
    await row.locator("details.host-menu summary").click();
    await row.locator('button[data-command="pull-switch"]').click();
    await expect(row.locator(".progress-badge-mini")).toHaveText("pull-switch");
    await expect(row.locator("button[data-command=stop]")).toBeVisible();
    expect(await columns()).toEqual(before);
    await expect(row.locator(".progress-badge-mini")).toHaveCount(0, { timeout: 15_000 });
    await expect(row.locator("button[data-command=test]")).toBeVisible();
    expect(await columns()).toEqual(before);
  } finally {
    await agent.stop("SIGKILL");
  }
});

test("at 1440×900 the whole row fits: the Actions cell ends inside the window, nothing scrolls sideways", async ({ page }) => {
  const admin = await loginApi();
  const hostname = `wide-${Date.now()}`;
  // A row as wide as the README's: a location and tags beside the type.
  const agent = new Agent(hostname, await createHost(admin, { hostname, location: "fra1" }), BASE, ["--tags", "web,db"]);
  agent.start();
  try {
    await page.setViewportSize({ width: 1440, height: 900 });
    await loginUi(page);
    // This host alone (an 18-character name), so that other tests' hosts do not decide
    // the widths; a longer name or more tags may still widen the table, which then scrolls.
    await page.locator("input.host-filter").fill(hostname);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    await expect(row.locator('[data-testid="sparkline"] path')).toHaveAttribute("d", /^M/, { timeout: 20_000 });
    const geometry = await page.evaluate((id) => {
      const fleet = document.querySelector(".fleet") as HTMLElement;
      const cell = document.querySelector(`tr[data-host-id="${id}"] td.cell-actions`) as HTMLElement;
      const last = [...cell.querySelectorAll("button, summary")].pop() as HTMLElement;
      return {
        cellRight: cell.getBoundingClientRect().right,
        lastRight: last.getBoundingClientRect().right,
        scroll: fleet.scrollWidth - fleet.clientWidth,
        page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
      };
    }, hostname);
    expect(geometry.cellRight).toBeLessThanOrEqual(1440);
    expect(geometry.lastRight).toBeLessThanOrEqual(1440);
    expect(geometry.scroll).toBe(0);
    expect(geometry.page).toBe(0);
  } finally {
    await agent.stop("SIGKILL");
  }
});

test("below 768 px the rows become cards with the same live content", async ({ page }) => {
  const { hostname, agent } = await liveHost("card");
  try {
    await page.setViewportSize({ width: 390, height: 800 });
    await loginUi(page);
    // One element per host: the row itself is laid out as a card.
    const card = page.locator(`tr.host-row[data-host-id="${hostname}"]`);
    await expect(card).toBeVisible();
    await expect(page.locator(`[data-host-id="${hostname}"]`)).toHaveCount(1);
    await expect(page.locator(".host-table thead")).toBeHidden();
    expect(await card.evaluate((e) => getComputedStyle(e).display)).toBe("grid");
    const box = (await card.boundingBox())!;
    expect(box.x).toBeGreaterThanOrEqual(0);
    expect(box.x + box.width).toBeLessThanOrEqual(390);
    const pull = (await card.locator("button[data-command=pull]").boundingBox())!;
    expect(pull.x + pull.width).toBeLessThanOrEqual(box.x + box.width);
    // Nothing runs past the card's edge or over another cell: every compartment inside,
    // the figures clear of the last-seen age.
    for (const c of await card.locator(".update-compartment").all()) {
      const b = (await c.boundingBox())!;
      expect(b.x + b.width).toBeLessThanOrEqual(box.x + box.width);
    }
    const figures = (await card.locator(".cell-metrics").boundingBox())!;
    const seen = (await card.locator(".cell-last-seen").boundingBox())!;
    const apart =
      figures.y + figures.height <= seen.y || seen.y + seen.height <= figures.y ||
      figures.x + figures.width <= seen.x || seen.x + seen.width <= figures.x;
    expect(apart, `figures ${JSON.stringify(figures)} and last seen ${JSON.stringify(seen)} overlap`).toBe(true);
    await expect(card.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    await expect(card.locator('[data-metric="cpu"] .metric-val')).toHaveText(/^\d+%$/);
    await expect(card.locator('.update-compartment[data-compartment="agent"]')).not.toHaveClass(/unknown/);
    await expect(card.locator("button[data-command=pull]")).toBeEnabled();
    await agent.stop();
    await expect(card).toHaveClass(/\bhost-offline\b/, { timeout: 15_000 });
    await expect(card.locator("button[data-command=pull]")).toBeDisabled();
    await page.screenshot({ path: "test-results/mobile.png", fullPage: true });
  } finally {
    await agent.stop("SIGKILL");
  }
});

test("refresh spins while it loads; a network error keeps the data, a 404 drops the host", async ({ page }) => {
  const { hostname, agent } = await liveHost("refresh");
  try {
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    const button = row.locator(".btn-refresh");

    // Slow answer: the spinner shows until it arrives.
    let release: () => void = () => {};
    const held = new Promise<void>((r) => (release = r));
    await page.route("**/api/refresh_host*", async (route) => {
      await held;
      await route.continue();
    });
    await row.hover();
    await button.click();
    await expect(button).toHaveClass(/\bloading\b/);
    release();
    await expect(button).not.toHaveClass(/\bloading\b/);
    await page.unroute("**/api/refresh_host*");

    // Network error: a toast, and the host stays.
    await page.route("**/api/refresh_host*", (route) => route.abort("failed"));
    await button.click();
    await expect(page.locator(".notice.error")).toContainText("refresh failed");
    await expect(row).toBeVisible();
    await page.unroute("**/api/refresh_host*");

    // 404: the host is gone on the server; it leaves the page with a notice.
    await page.route("**/api/refresh_host*", (route) =>
      route.fulfill({ status: 404, contentType: "application/json", body: JSON.stringify({ NotFound: `host ${hostname}` }) }),
    );
    await button.click();
    await expect(row).toHaveCount(0);
    await expect(page.locator(".notice").last()).toContainText("no longer exists");
  } finally {
    await agent.stop("SIGKILL");
  }
});

test("the ⋮ menu removes a host after a confirm, and its agent is cut off", async ({ page }) => {
  const { hostname, agent } = await liveHost("doomed");
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    await row.locator("details.host-menu > summary").click();
    await row.locator("button[data-command=remove]").click();
    const dialog = page.locator(".modal[role=dialog]");
    await expect(dialog).toContainText(`Remove ${hostname}?`);
    // Cancel keeps it.
    await dialog.locator("button.cancel").click();
    await expect(dialog).toHaveCount(0);
    await expect(row).toBeVisible();
    await row.locator("details.host-menu > summary").click();
    await row.locator("button[data-command=remove]").click();
    await page.locator(".modal button.confirm").click();
    await expect(row).toHaveCount(0);
    // The server agrees, and the agent's token no longer works.
    const admin = await loginApi();
    const hosts = await (await admin.api.get("/api/hosts")).json();
    expect(hosts.map((h: { id: string }) => h.id)).not.toContain(hostname);
    await expect.poll(() => agent.log, { timeout: 15_000 }).toMatch(/token rejected|401/);
  } finally {
    await agent.stop("SIGKILL");
  }
  expect(errors).toEqual([]);
});

test("the agent badge shows while a host runs an outdated agent and goes when a current one connects", async ({ page }) => {
  const admin = await loginApi();
  const hostname = `badge-${Date.now()}`;
  const token = await createHost(admin, { hostname });
  const old = await RawAgent.connect(BASE, token);
  old.send({ type: "register", payload: { hostname, host_type: "nixos", agent_version: "0.0.1-old" } });
  old.send({ type: "heartbeat", payload: { metrics: null } });
  const agent = new Agent(hostname, token);
  try {
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    const lock = row.locator('[data-compartment="lock"]');
    await expect(lock.locator(".agent-badge")).toBeVisible({ timeout: 15_000 });
    await expect(row.locator('[data-compartment="agent"]')).toHaveClass(/\bneeds-update\b/);
    // The real agent (this dashboard's version) replaces the old link: the badge goes.
    old.close();
    agent.start();
    await expect(row.locator('[data-compartment="agent"] .compartment-indicator--ok')).toBeVisible({ timeout: 15_000 });
    await expect(lock.locator(".agent-badge")).toHaveCount(0);
  } finally {
    old.close();
    await agent.stop("SIGKILL");
  }
});

test("menus and the confirm dialog work from the keyboard", async ({ page }) => {
  const admin = await loginApi();
  const hostname = `keys-${Date.now()}`;
  const agent = new Agent(hostname, await createHost(admin, { hostname }));
  agent.start();
  try {
    await loginUi(page);
    await expect(page.locator(`tr[data-host-id="${hostname}"] .status-indicator`)).toHaveClass(/\bstatus-ripple\b/, {
      timeout: 15_000,
    });
    const menu = page.locator("#bulk-actions-menu");
    await menu.locator("summary").focus();
    await page.keyboard.press("Enter");
    await expect(menu).toHaveAttribute("open", "");
    // Escape closes the menu and gives focus back to its button.
    await page.keyboard.press("Escape");
    await expect(menu).not.toHaveAttribute("open", "");
    await expect(menu.locator("summary")).toBeFocused();
    // Open again; Tab reaches the first enabled item ("Pull all online"); Enter asks. The
    // items are built when the menu opens (a lazy part), so Tab waits until they show, as
    // a person's would: with a long fleet on the page that takes a few frames.
    await page.keyboard.press("Enter");
    await expect(menu.locator('button[data-command="pull"][data-scope="online"]')).toBeVisible();
    await page.keyboard.press("Tab");
    await expect(menu.locator('button[data-command="pull"][data-scope="online"]')).toBeFocused();
    await page.keyboard.press("Enter");
    const dialog = page.locator(".modal[role=dialog]");
    await expect(dialog).toContainText("Run pull on");
    // Focus starts on Cancel; Escape closes without running anything.
    await expect(dialog.locator("button.cancel")).toBeFocused();
    await page.keyboard.press("Escape");
    await expect(dialog).toHaveCount(0);
    const history = await (await admin.api.get(`/api/hosts/${hostname}/commands?limit=5`)).json();
    expect(history).toEqual([]);
    // Focus is visible on keyboard focus.
    await menu.locator("summary").focus();
    const outline = await menu.locator("summary").evaluate((e) => getComputedStyle(e).outlineStyle);
    expect(outline).not.toBe("none");
  } finally {
    await agent.stop("SIGKILL");
  }
});

/** Hosts in the database that this test did not create. */
async function otherHosts(admin: Awaited<ReturnType<typeof loginApi>>, prefix: string): Promise<number> {
  const hosts: { hostname: string }[] = await (await admin.api.get("/api/hosts")).json();
  return hosts.filter((h) => !h.hostname.startsWith(prefix)).length;
}

test("a long fleet is windowed; its snapshot spans many WebSocket frames; it stays live", async ({ page }) => {
  const admin = await loginApi();
  const prefix = `many-${Date.now()}`;
  const names = Array.from({ length: 120 }, (_, i) => `${prefix}-${String(i).padStart(3, "0")}`);
  for (const hostname of names) await createHost(admin, { hostname });
  try {
    // How many rows the list had each time it changed, whether they reached the bottom of
    // the viewport, and in which animation frame.
    await page.addInitScript(() => {
      const w = window as any;
      const steps: { n: number; filled: boolean; frame: number }[] = (w.__rowSteps = []);
      w.__frame = 0;
      const tick = () => {
        w.__frame++;
        requestAnimationFrame(tick);
      };
      requestAnimationFrame(tick);
      new MutationObserver(() => {
        const rows = document.querySelectorAll("tr.host-row");
        const n = rows.length;
        if (n === 0 || n === steps[steps.length - 1]?.n) return;
        const filled = rows[n - 1].getBoundingClientRect().bottom >= window.innerHeight;
        steps.push({ n, filled, frame: w.__frame });
      }).observe(document, { childList: true, subtree: true });
    });
    await loginUi(page);
    await expect(page.locator(".link-state, footer").filter({ hasText: "Connected" }).first()).toBeVisible({ timeout: 15_000 });
    // Opened from the login form, the page sized its window from the viewport before the
    // snapshot came: its first rows filled the screen at once; the margin below the fold
    // followed a step at a time, each in a later frame (after the first rows were painted).
    await expect(page.locator("tr.host-row")).not.toHaveCount(0);
    await expect.poll(() => page.evaluate(() => (window as any).__rowSteps.length)).toBeGreaterThanOrEqual(2);
    const final = await page.locator("tr.host-row").count();
    await expect.poll(() => page.evaluate(() => (window as any).__rowSteps.at(-1).n)).toBe(final);
    const steps: { n: number; filled: boolean; frame: number }[] = await page.evaluate(() => (window as any).__rowSteps);
    expect(steps[0].filled, JSON.stringify(steps)).toBe(true);
    expect(steps[0].n).toBeLessThan(final);
    for (let i = 1; i < steps.length; i++) {
      expect(steps[i].n - steps[i - 1].n, JSON.stringify(steps)).toBeGreaterThan(0);
      expect(steps[i].n - steps[i - 1].n, JSON.stringify(steps)).toBeLessThanOrEqual(12);
      expect(steps[i].frame, JSON.stringify(steps)).toBeGreaterThan(steps[i - 1].frame);
    }
    // The stream goes on after the (fragmented, > 64 KiB) snapshot: a new host shows live.
    const late = `${prefix}-late`;
    await createHost(admin, { hostname: late });
    names.push(late);
    await expect(page.locator(".fleet-count")).toContainText(`/${names.length + (await otherHosts(admin, prefix))} online`);
    // The list is windowed: far fewer rows than hosts exist, and the spacers stand in for
    // the rest, so the page is as tall as the whole list.
    const rendered = await page.locator(`tr[data-host-id^="${prefix}-"]`).count();
    expect(rendered).toBeGreaterThan(20);
    expect(rendered).toBeLessThan(names.length);
    const rowHeight = (await page.locator("tr.host-row").first().boundingBox())!.height;
    const tableHeight = (await page.locator(".host-table tbody").boundingBox())!.height;
    expect(tableHeight).toBeGreaterThan(rowHeight * names.length * 0.9);
    // Scrolling to the end brings the last hosts (the late one among them) in, live.
    await page.evaluate(() => window.scrollTo(0, document.body.scrollHeight));
    await expect(page.locator(`tr[data-host-id="${late}"]`)).toBeVisible({ timeout: 10_000 });
    await expect(page.locator(`tr[data-host-id="${names[0]}"]`)).toHaveCount(0);
    // And back to the top.
    await page.evaluate(() => window.scrollTo(0, 0));
    await expect(page.locator(`tr[data-host-id="${names[0]}"]`)).toBeVisible();
    // The filter finds any host ("/" focuses it); select-all then takes only what it shows.
    await page.locator("body").click({ position: { x: 5, y: 5 } });
    await page.keyboard.press("/");
    await expect(page.locator("input.host-filter")).toBeFocused();
    await page.keyboard.type(`${prefix}-11`);
    await expect(page.locator("tr.host-row")).toHaveCount(10);
    await expect(page.locator(".filter-count")).toHaveText("10 shown");
    await page.locator('input[aria-label="Select all hosts"]').click();
    await expect(page.locator("summary").filter({ hasText: "Bulk actions" })).toContainText("· 10");
    await page.locator("input.host-filter").fill("no-such-host-anywhere");
    await expect(page.locator("p.empty")).toContainText("No host matches");
    await page.locator("input.host-filter").press("Escape");
    await expect(page.locator("input.host-filter")).toHaveValue("");
    await expect(page.locator(`tr[data-host-id="${names[0]}"]`)).toBeVisible();
  } finally {
    for (const n of names) await admin.api.delete(`/api/hosts/${n}`, { headers: { "X-CSRF-Token": admin.csrf } });
  }
});
