// The legend (issue 21): a "?" in the header opens a panel, loaded on demand, that names
// every update compartment and every state word the rows show, each with what it means.
import { expect, test } from "@playwright/test";
import { Agent, BASE, createHost, loginApi, loginUi } from "./fleet";

test("the legend opens from the header and explains every compartment and state word in the rows", async ({ page }) => {
  const admin = await loginApi();
  const name = `legend-${Date.now()}`;
  const agent = new Agent(name, await createHost(admin, { hostname: name }), BASE, []);
  agent.start();
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${name}"]`);
    await expect(row.locator("[data-compartment]")).toHaveCount(5, { timeout: 15_000 });
    const legend = page.locator('[data-testid="legend"]');
    await expect(legend).toHaveCount(0);
    await page.locator("header button.legend-button").click();
    await expect(legend).toBeVisible();

    // Every compartment, by the name the rows show, with its meaning.
    await expect(legend.locator("dt[data-compartment]")).toHaveText(["agent", "git", "lock", "system", "tests"]);
    await expect(legend.locator('dt[data-compartment="git"] + dd')).toContainText("desired branch");
    // Every state word, and every word (and compartment) the rows show now is among them.
    await expect(legend.locator("dt[data-state]")).toHaveText(["ok", "behind", "error", "unknown", "…"]);
    const words = await page.locator("tr[data-host-id] .compartment-code").allTextContents();
    const names = await page.locator("tr[data-host-id] .compartment-name").allTextContents();
    expect(words.length).toBeGreaterThan(0);
    for (const word of new Set(words)) {
      await expect(legend.locator(`dt[data-state="${word.trim()}"] + dd`)).not.toBeEmpty();
    }
    for (const n of new Set(names)) {
      await expect(legend.locator(`dt[data-compartment="${n.trim()}"] + dd`)).not.toBeEmpty();
    }

    await legend.locator("button.cancel").click();
    await expect(legend).toBeHidden();
  } finally {
    await agent.stop("SIGKILL");
  }
  expect(errors).toEqual([]);
});
