// The Notifications page (admins): add a webhook target and see its URL shortened, send a
// test to a local receiver and read the delivery log, add and delete a rule; a bad URL
// says why. The page is a lazy chunk of its own.
import { expect, test } from "@playwright/test";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { loginUi } from "./fleet";

test("admins add a target, send a test and manage rules in the page", async ({ page }) => {
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(e.message));
  const got: any[] = [];
  const receiver = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      got.push(JSON.parse(body));
      res.end("ok");
    });
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  const port = (receiver.address() as AddressInfo).port;
  try {
    await loginUi(page);
    await page.goto("/notifications");
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);

    const name = `hook${Date.now() % 100000}`;
    await page.fill(".add-notify-target input[name=name]", name);
    await page.fill(".add-notify-target input[name=url]", "ftp://nowhere.example/x");
    await page.click(".add-notify-target button[type=submit]");
    await expect(page.locator(".admin-message")).toContainText("http://");

    await page.fill(".add-notify-target input[name=url]", `http://127.0.0.1:${port}/hook/SECRET-ui-path`);
    await page.click(".add-notify-target button[type=submit]");
    await expect(page.locator(".admin-message")).toHaveText(`Added target ${name}.`);
    const row = page.locator("table.notify-targets tr", { hasText: name });
    await expect(row).toContainText(`http://127.0.0.1:${port}/…`);
    await expect(page.locator("body")).not.toContainText("SECRET-ui-path");

    await row.locator(".btn-notify-test").click();
    await expect.poll(() => got.length).toBe(1);
    expect(got[0].event).toBe("test");
    await row.locator(".btn-notify-log").click();
    await expect(page.locator("table.notify-log tr[data-status=sent]").first()).toBeVisible();

    const id = await row.getAttribute("data-target");
    await page.fill(".add-notify-rule input[name=after_s]", "120");
    await page.fill(".add-notify-rule input[name=tags]", "web");
    await page.fill(".add-notify-rule input[name=target_ids]", id!);
    await page.click(".add-notify-rule button[type=submit]");
    await expect(page.locator(".admin-message")).toHaveText("Added the rule.");
    const rule = page.locator("table.notify-rules tbody tr", { hasText: "tag:web" });
    await expect(rule).toContainText("120 s");
    await rule.locator(".btn-rule-delete").click();
    await expect(rule).toHaveCount(0);
    expect(errors).toEqual([]);
  } finally {
    receiver.close();
  }
});
