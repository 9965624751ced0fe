// Two-factor authentication from the account page, then a login that asks for the code.
import { expect, test } from "@playwright/test";
import { spawnSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { join } from "node:path";
import { BASE } from "./fleet";

const SERVER_BIN = process.env.NIXDECK_SERVER_BIN ?? join(__dirname, "../../target/debug/nixdeck");

/** RFC 6238 TOTP (SHA-1, 6 digits, 30 s) for a base32 secret. */
function totp(secretBase32: string, at = Date.now()): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = "";
  for (const c of secretBase32.replace(/=+$/, "")) bits += alphabet.indexOf(c).toString(2).padStart(5, "0");
  const key = Buffer.from(bits.match(/.{8}/g)!.map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(at / 1000 / 30)));
  const mac = createHmac("sha1", key).update(counter).digest();
  const offset = mac[mac.length - 1] & 0xf;
  const code = (mac.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return code.toString().padStart(6, "0");
}

test("enroll TOTP on the account page; the next login asks for the code; enrolling again asks for one too", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const user = `totp${Date.now() % 100000}`;
  const password = "totp-user-password-1";
  const add = spawnSync(SERVER_BIN, ["user", "add", user, "--role", "viewer", "--password-stdin"], {
    input: `${password}\n`,
    env: { ...process.env, NIXDECK_DATABASE_URL: process.env.NIXDECK_DATABASE_URL },
  });
  expect(add.status, add.stderr.toString()).toBe(0);

  const login = async (code?: string) => {
    await page.goto("/login");
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    await page.fill("input[name=username]", user);
    await page.fill("input[name=password]", password);
    await page.click("button[type=submit]");
    if (code !== undefined) {
      await expect(page.locator("input[name=totp]")).toBeVisible();
      await page.fill("input[name=totp]", code);
      await page.click("button[type=submit]");
    }
    await expect(page).toHaveURL(`${BASE}/`);
  };
  await login();
  await page.click(`a.account-link[href="/account"]`);
  await expect(page).toHaveURL(/\/account$/);
  // Starting the setup needs the password.
  await page.fill(".totp-start input[name=password]", password);
  await page.click("button.btn-totp-setup");
  await expect(page.locator("img.totp-qr")).toBeVisible();
  const secret = (await page.locator("code.totp-secret").textContent())!.trim();
  await page.fill("input[name=code]", totp(secret));
  await page.click(".totp-setup button[type=submit]");
  await expect(page.locator(".recovery-codes li")).toHaveCount(10);
  const recovery = (await page.locator(".recovery-codes li code").first().textContent())!.trim();
  const another = (await page.locator(".recovery-codes li code").nth(1).textContent())!.trim();

  // Log out; the password alone now leads to the code field; a recovery code gets in.
  await page.goto("/");
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await page.click("button.logout");
  await expect(page).toHaveURL(/\/login$/);
  await login(recovery);

  // Setting up again (a new phone) needs the password and, now, a current code: the
  // field appears once the server asks for it; a recovery code does too.
  await page.click(`a.account-link[href="/account"]`);
  await expect(page).toHaveURL(/\/account$/);
  await page.fill(".totp-start input[name=password]", password);
  await page.click("button.btn-totp-setup");
  await expect(page.locator(".totp-start input[name=current_code]")).toBeVisible();
  await expect(page.locator(".account .form-error")).toContainText("current code");
  await expect(page.locator("img.totp-qr")).toHaveCount(0);
  await page.fill(".totp-start input[name=current_code]", another);
  await page.click("button.btn-totp-setup");
  await expect(page.locator("img.totp-qr")).toBeVisible();
  expect(errors).toEqual([]);
});

test("admins manage users and read the audit log in the page", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Every page but the dashboard is a separate wasm chunk (lazy routes), fetched on its
  // first visit; the dashboard fetches its own lazy parts (dialogs, menus, panels) in the
  // background once it is up, and never the other pages.
  const chunks: string[] = [];
  const parts: string[] = [];
  page.on("request", (r) => {
    const route = /\/pkg\/split___(\w+?)_route_view_\d+\.wasm$/.exec(r.url());
    if (route) chunks.push(route[1]);
    const part = /\/pkg\/split_([a-z]\w+?)_\d+\.wasm$/.exec(r.url());
    if (part) parts.push(part[1]);
  });
  await page.goto("/login");
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await page.fill("input[name=username]", "admin");
  await page.fill("input[name=password]", process.env.NIXDECK_ADMIN_PASSWORD ?? "");
  await page.click("button[type=submit]");
  await expect(page).toHaveURL(`${BASE}/`);
  await expect(page.locator("tr.host-row, p.empty").first()).toBeVisible();
  await expect
    .poll(() => [...parts].sort())
    .toEqual(["add_host_dialog", "bulk_menu_items", "confirm_dialog", "deploy_diff_panel", "deploy_panel", "fleet_diff_panel", "generations_panel", "host_edit_dialog", "host_menu_items", "legend_panel", "log_panel", "notice_list", "refresh_host_now", "run_host_action", "tag_counts"]);
  // (The login page is a chunk of its own too, fetched by /login.)
  expect(chunks).toEqual(["login"]);

  await page.goto("/users");
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await expect.poll(() => chunks).toEqual(["login", "users"]);
  const user = `ui${Date.now() % 100000}`;
  await page.fill(".add-user input[name=username]", user);
  await page.selectOption(".add-user select[name=role]", "viewer");
  await page.fill(".add-user input[name=password]", "short");
  await page.click(".add-user button[type=submit]");
  await expect(page.locator(".admin-message")).toContainText("at least 12");
  await page.fill(".add-user input[name=password]", "ui-user-password-1");
  await page.click(".add-user button[type=submit]");
  await expect(page.locator(".admin-message")).toHaveText(`Added ${user}.`);
  const row = page.locator(`tr[data-user="${user}"]`);
  await expect(row.locator(".user-state")).toHaveText("active");
  await row.locator(".btn-toggle-user").click();
  await expect(row.locator(".user-state")).toHaveText("disabled");

  // A link inside the app: the router fetches the audit page's chunk, then shows it.
  await page.click("a.account-link[href='/audit']");
  await expect(page).toHaveURL(`${BASE}/audit`);
  await expect.poll(() => chunks).toEqual(["login", "users", "audit"]);
  await page.fill(".audit-filter input[name=action]", "user.disable");
  await page.click(".audit-filter button[type=submit]");
  const entry = page.locator(".audit-entry").first();
  await expect(entry).toContainText(user);
  await expect(entry).toContainText("admin");
  expect(errors).toEqual([]);
});

test("user management asks for the password again long after the login", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // An admin of this test's own, so aging its sessions touches no other test.
  const admin = `reauth${Date.now() % 100000}`;
  const password = "reauth-admin-password-1";
  const env = { ...process.env, NIXDECK_DATABASE_URL: process.env.NIXDECK_DATABASE_URL };
  for (const [name, role] of [[admin, "admin"], [`${admin}x`, "viewer"]]) {
    const add = spawnSync(SERVER_BIN, ["user", "add", name, "--role", role, "--password-stdin"], {
      input: `${password}\n`,
      env,
    });
    expect(add.status, add.stderr.toString()).toBe(0);
  }
  await page.goto("/login");
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  await page.fill("input[name=username]", admin);
  await page.fill("input[name=password]", password);
  await page.click("button[type=submit]");
  await expect(page).toHaveURL(`${BASE}/`);

  // The login was an hour ago, as far as the server knows.
  const db = (process.env.NIXDECK_DATABASE_URL ?? "").replace(/^sqlite:\/\//, "");
  const aged = spawnSync("sqlite3", [
    db,
    `UPDATE sessions SET authenticated_at = strftime('%s','now') - 3600 WHERE username = '${admin}';`,
  ]);
  expect(aged.status, aged.stderr.toString()).toBe(0);

  await page.goto("/users");
  await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
  const row = page.locator(`tr[data-user="${admin}x"]`);
  await expect(row.locator(".user-state")).toHaveText("active");
  await row.locator(".btn-toggle-user").click();
  // Not done yet: the page asks who is there.
  const prompt = page.locator("form.reauth");
  await expect(prompt).toBeVisible();
  await expect(row.locator(".user-state")).toHaveText("active");
  await prompt.locator("input[name=password]").fill("a-wrong-password-1");
  await prompt.locator("button[type=submit]").click();
  await expect(prompt.locator(".form-error")).toContainText("not right");
  await prompt.locator("input[name=password]").fill(password);
  await prompt.locator("button[type=submit]").click();
  // The action that asked goes ahead by itself.
  await expect(prompt).toBeHidden();
  await expect(row.locator(".user-state")).toHaveText("disabled");
  expect(errors).toEqual([]);
});
