// Desired state, the flake.lock PR and Merge & Deploy, against a dashboard of the test's own
// that reads a real git repository through fake-github (GitHub's REST API stand-in).
import { expect, Page, test } from "@playwright/test";
import { Agent, commandConfig, createHost, FakeGitHub, loginApi, loginUi, Server } from "./fleet";

function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("dialog", (d) => {
    errors.push(`dialog: ${d.message()}`);
    void d.dismiss();
  });
  return errors;
}

test("Merge & Deploy from the bulk menu: the PR mark, live progress per host, and every host green at the end", async ({
  page,
}) => {
  const gh = new FakeGitHub();
  await gh.start();
  // Hostile text from GitHub must show as text, never run.
  const title = `<img src=x onerror="window.__pwned=1"> flake.lock: update "nixpkgs"`;
  await gh.pr({ number: 5, title, labels: ["dependencies"], mergeable: true });
  const server = new Server(Number(process.env.E2E_DEPLOY_PORT ?? 3902), gh.env());
  await server.start();
  const errors = watchErrors(page);
  const admin = await loginApi(server.base);
  const names = ["deploy-a", "deploy-b"];
  const agents: Agent[] = [];
  // The switch takes a moment, so the page can be seen showing progress.
  const config = commandConfig({ switch: "echo building; sleep 1; echo activated" });
  for (const n of names) {
    const token = await createHost(admin, { hostname: n });
    const agent = new Agent(n, token, server.base, ["--repo-dir", gh.checkout(n), "--branch", "main", "--config", config]);
    agent.start();
    agents.push(agent);
  }
  try {
    await loginUi(page, server.base);
    const before = gh.head();
    await expect(page.getByTestId("desired-commit").first()).toHaveText(before.slice(0, 7), { timeout: 15_000 });
    for (const n of names) {
      const row = page.locator(`tr[data-host-id="${n}"]`);
      await expect(row.locator('[data-compartment="git"] .compartment-indicator--ok')).toBeVisible({ timeout: 15_000 });
      // A flake.lock PR is waiting: the lock compartment carries the mark.
      await expect(row.locator('[data-compartment="lock"]')).toHaveClass(/\bhas-pr\b/);
      await expect(row.locator('[data-compartment="lock"]')).toHaveAttribute("title", /Update PR #5 is open \(mergeable\)/);
    }
    const pr = page.getByTestId("pending-pr").first();
    await expect(pr).toContainText("PR #5");
    await expect(pr).toContainText('<img src=x onerror="window.__pwned=1">');
    await expect(pr.locator("img")).toHaveCount(0);

    await page.locator("#bulk-actions-menu > summary").click();
    await page.getByTestId("menu-merge-deploy").click();
    await expect(page.locator(".modal[role=dialog]")).toContainText("PR #5");
    await page.locator(".modal button.confirm").click();

    const panel = page.getByTestId("deploy-panel");
    await expect(panel).toBeVisible();
    // Progress is live: some host is seen running before the end.
    await expect(panel.locator('[data-testid="deploy-host"][data-state="running"]').first()).toBeVisible({
      timeout: 20_000,
    });
    await expect(panel).toHaveAttribute("data-phase", "done", { timeout: 60_000 });
    for (const n of names) {
      await expect(panel.locator(`[data-testid="deploy-host"][data-host="${n}"]`)).toHaveAttribute("data-state", "ok");
    }
    await expect(panel.getByTestId("deploy-progress")).toHaveAttribute("aria-valuenow", String(names.length));

    // GitHub's main moved to the merge commit; every host is at it, with git and lock green,
    // and the PR mark is gone. No reload was needed for any of it.
    const merged = gh.head();
    expect(merged).not.toBe(before);
    await expect(page.getByTestId("desired-commit").first()).toHaveText(merged.slice(0, 7), { timeout: 15_000 });
    for (const n of names) {
      const row = page.locator(`tr[data-host-id="${n}"]`);
      await expect(row.locator('[data-compartment="git"] .compartment-indicator--ok')).toBeVisible({ timeout: 15_000 });
      await expect(row.locator('[data-compartment="lock"] .compartment-indicator--ok')).toBeVisible();
      await expect(row.locator('[data-compartment="system"] .compartment-indicator--ok')).toBeVisible();
      await expect(row.locator('[data-compartment="lock"]')).not.toHaveClass(/\bhas-pr\b/, { timeout: 15_000 });
    }
    await expect(page.locator(".pending-pr")).toBeHidden();
    // Every output line of the deploy's commands was kept, and the log panel shows them.
    for (const n of names) {
      const history = await (await admin.api.get(`/api/hosts/${n}/commands?limit=5`)).json();
      expect(history.map((c: any) => `${c.command}:${c.status}`).slice(0, 2)).toEqual(["switch:ok", "pull:ok"]);
      const log = async () => (await admin.api.get(`/api/commands/${history[0].command_id}/log`)).text();
      // Stored before the completion (a late line would come only with the agent's resend, 15 s on).
      await expect.poll(log, { timeout: 2_000, message: agents.map((a) => a.log).join("\n----\n") }).toContain("activated");
      expect(await log()).toContain("building");
    }
    await page.locator(".log-tabs").getByText(names[1]).click();
    await expect(page.locator(".log-lines")).toContainText("activated");
    await page.screenshot({ path: test.info().outputPath("dashboard-after-deploy.png"), fullPage: true });
    expect(await page.evaluate(() => (window as any).__pwned)).toBeUndefined();

    // A page loaded now shows the ended deploy too: the panel (a lazily loaded part, built
    // in the browser once the page is hydrated) comes up and works.
    await page.reload();
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    await expect(panel).toHaveAttribute("data-phase", "done");
    await panel.getByTestId("deploy-dismiss").click();
    await expect(panel).toHaveCount(0);

    // The Deploys page (a lazy chunk, linked from the header) lists the job: its PR, who
    // started it, and per host the outcome and the commands it ran, each linked to its log.
    await page.locator("header").getByRole("link", { name: "Deploys" }).click();
    await expect(page).toHaveURL(/\/deploys$/);
    const record = page.getByTestId("deploy-record").first();
    await expect(record).toBeVisible({ timeout: 15_000 });
    await expect(record.locator("h3")).toContainText("PR #5");
    await expect(record).toHaveAttribute("data-phase", "done");
    await expect(record.getByTestId("deploy-starter")).toHaveText("admin");
    for (const n of names) {
      const host = record.locator(`[data-testid="deploys-host"][data-host="${n}"]`);
      await expect(host).toHaveAttribute("data-state", "ok");
      const steps = host.getByTestId("deploy-command");
      await expect(steps).toHaveCount(2);
      await expect(steps.nth(0)).toContainText("pull ok");
      await expect(steps.nth(1)).toContainText("switch ok");
      const href = await steps.nth(1).getAttribute("href");
      expect(href).toMatch(/^\/api\/commands\/[^/]+\/log$/);
      expect(await (await admin.api.get(href!)).text()).toContain("activated");
    }
    expect(errors).toEqual([]);
  } finally {
    for (const a of agents) await a.stop("SIGKILL");
    await server.stop();
    gh.stop();
  }
});
