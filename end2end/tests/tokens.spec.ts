// Personal API tokens on the account page: made in the page, shown once, used by a script
// as `Authorization: Bearer`, revoked in the page, and refused (401) on the next request.
import { expect, request, test } from "@playwright/test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { BASE, loginUi } from "./fleet";

const SERVER_BIN = process.env.NIXDECK_SERVER_BIN ?? join(__dirname, "../../target/debug/nixdeck");

test("make a token on the account page, use it as a bearer token, revoke it in the page", async ({ page, context }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const user = `tok${Date.now() % 100000}`;
  const password = "token-user-password-1";
  const add = spawnSync(SERVER_BIN, ["user", "add", user, "--role", "operator", "--password-stdin"], {
    input: `${password}\n`,
    env: { ...process.env, NIXDECK_DATABASE_URL: process.env.NIXDECK_DATABASE_URL },
  });
  expect(add.status, add.stderr.toString()).toBe(0);
  await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: BASE });

  await loginUi(page, BASE, user, password);
  await page.click(`a.account-link[href="/account"]`);
  await expect(page).toHaveURL(/\/account$/);
  await expect(page.locator(".api-tokens .no-tokens")).toBeVisible();
  // The role select offers the user's role and below, never more.
  const roles = page.locator("select[name=token_role] option");
  await expect(roles).toHaveText(["viewer", "operator"]);
  await expect(page.locator("input[name=token_days]")).toHaveValue("90");

  await page.fill("input[name=token_name]", "e2e script");
  await page.selectOption("select[name=token_role]", "operator");
  await page.click("button.btn-create-token");
  const shown = page.locator(".token-created code.new-token");
  await expect(shown).toHaveText(/^ndk_[0-9a-f]{64}$/);
  await expect(page.locator(".token-created .warning")).toContainText("shown only once");
  const token = (await shown.textContent())!.trim();
  await page.click("button.btn-copy-token");
  expect(await page.evaluate(() => navigator.clipboard.readText())).toBe(token);
  const row = page.locator(".token-list tbody tr", { hasText: "e2e script" });
  await expect(row).toHaveCount(1);
  await expect(row.locator("td").nth(1)).toHaveText("operator");
  await expect(row.locator(".token-last-used")).toHaveText("never");

  // A script with the token: no cookie, no CSRF token.
  const script = await request.newContext({
    baseURL: BASE,
    extraHTTPHeaders: { Authorization: `Bearer ${token}` },
  });
  const hosts = await script.get("/api/hosts");
  expect(hosts.status()).toBe(200);
  expect(Array.isArray(await hosts.json())).toBe(true);

  // Shown once: a reload lists the token, with its use, but never the token itself.
  await page.reload();
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await expect(page.locator(".token-created")).toHaveCount(0);
  await expect(row.locator(".token-last-used")).not.toHaveText("never");
  expect(await page.content()).not.toContain(token.slice(4));

  await row.locator("button.btn-revoke-token").click();
  await expect(row).toHaveCount(0);
  await expect(page.locator(".api-tokens .no-tokens")).toBeVisible();
  const after = await script.get("/api/hosts");
  expect(after.status()).toBe(401);
  await script.dispose();
  expect(errors).toEqual([]);
});
