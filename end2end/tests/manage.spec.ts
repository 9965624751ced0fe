// Adding hosts from the page, and bulk actions over a selection.
import { expect, Page, test } from "@playwright/test";
import { Agent, BASE, createHost, loginApi, loginUi } from "./fleet";


test("add a host in the UI, start an agent with the shown token, and see it appear live", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  await loginUi(page);
  await page.click("button.btn-add-host");
  const dialog = page.locator(".modal.add-host");
  await expect(dialog).toBeVisible();
  // Invalid input is explained inline, before anything is sent.
  await dialog.locator("input[name=hostname]").fill("bad host!");
  await dialog.locator("input[name=hostname]").blur();
  await expect(dialog.locator(".field-error").first()).toContainText("letters, digits");
  const hostname = `added-${Date.now()}`;
  await dialog.locator("input[name=hostname]").fill(hostname);
  await expect(dialog.locator(".field-error").first()).toHaveText("");
  await dialog.locator("select[name=host_type]").selectOption("macos");
  await dialog.locator("input[name=location]").fill("lab");
  await dialog.locator("button[type=submit]").click();

  const snippet = dialog.locator(".agent-snippet");
  await expect(snippet).toContainText(`--hostname ${hostname}`);
  const token = /NIXDECK_TOKEN=([0-9a-f]{64})/.exec((await snippet.textContent()) ?? "")?.[1];
  expect(token).toBeTruthy();
  await dialog.locator("button.confirm").click();

  // Already in the table (host_added), offline until its agent connects.
  const row = page.locator(`tr[data-host-id="${hostname}"]`);
  await expect(row).toBeVisible();
  await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-offline\b/);
  await expect(row.locator(".hostname")).toHaveCSS("color", "rgb(187, 154, 247)"); // macOS default
  const agent = new Agent(hostname, token!);
  agent.start();
  try {
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    // The same name again is refused with the server's reason, inline.
    await page.click("button.btn-add-host");
    await dialog.locator("input[name=hostname]").fill(hostname);
    await dialog.locator("button[type=submit]").click();
    await expect(dialog.locator(".form-error")).toContainText("already exists");
    await dialog.locator("button.cancel").click();
  } finally {
    await agent.stop("SIGKILL");
  }
  expect(errors).toEqual([]);
});

test("bulk actions: shift-click selects a range, the confirm counts hosts", async ({ page }) => {
  const admin = await loginApi();
  const stamp = Date.now();
  const names = ["b1", "b2", "b3"].map((n) => `${n}-${stamp}`);
  const agents: Agent[] = [];
  for (const hostname of names) {
    const agent = new Agent(hostname, await createHost(admin, { hostname }));
    agent.start();
    agents.push(agent);
  }
  try {
    await loginUi(page);
    for (const n of names) {
      await expect(page.locator(`tr[data-host-id="${n}"] .status-indicator`)).toHaveClass(/\bstatus-ripple\b/, {
        timeout: 15_000,
      });
    }
    await page.locator(`tr[data-host-id="${names[0]}"] input.select-host`).click();
    await page.locator(`tr[data-host-id="${names[2]}"] input.select-host`).click({ modifiers: ["Shift"] });
    for (const n of names) {
      await expect(page.locator(`tr[data-host-id="${n}"] input.select-host`)).toBeChecked();
    }
    await page.locator("#bulk-actions-menu > summary").click();
    await page.locator('#bulk-actions-menu button[data-command="pull"][data-scope="selected"]').click();
    await expect(page.locator(".modal[role=dialog]")).toContainText("Run pull on 3 selected hosts?");
    await page.locator(".modal button.confirm").click();
    await expect(page.locator(".notice").filter({ hasText: "started on 3 of 3 hosts" })).toBeVisible();
    // Each host got its own command.
    for (const n of names) {
      const history = await (await admin.api.get(`/api/hosts/${n}/commands?limit=5`)).json();
      expect(history[0]?.command).toBe("pull");
    }
  } finally {
    for (const a of agents) await a.stop("SIGKILL");
  }
});
