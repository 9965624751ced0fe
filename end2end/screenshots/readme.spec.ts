// The README's pictures (docs/screenshots/), from the real app: a dashboard of its own on a
// fresh database, a fake GitHub serving a config repository with a flake.lock update PR, and
// real agents, one per host. Run by `make screenshots` (scripts/screenshots.sh).
import { expect, Page, test } from "@playwright/test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { Agent, commandConfig, createHost, FakeGitHub, git, loginApi, loginUi, Server } from "../tests/fleet";

const OUT = process.env.SCREENSHOT_DIR ?? join(__dirname, "../../docs/screenshots");
const PORT = Number(process.env.SCREENSHOT_PORT ?? 3990);
// Wide enough for the whole host table (its Actions column is cut at 1280).
const DESKTOP = { width: 1440, height: 900 };
const PHONE = { width: 390, height: 844 };

const HOSTS = [
  { hostname: "web-1", location: "fra1", tags: ["web"] },
  { hostname: "web-2", location: "fra1", tags: ["web"] },
  { hostname: "db-1", location: "fra1", tags: ["db"] },
  { hostname: "build-1", location: "home", tags: ["ci"] },
  { hostname: "laptop", location: "home", tags: [] },
];

async function shot(page: Page, name: string): Promise<void> {
  // No caret, no hover: the picture shows the page, not the robot's mouse.
  await page.mouse.move(0, 0);
  await page.screenshot({ path: join(OUT, `${name}.png`), animations: "disabled", caret: "hide" });
}

test("README screenshots: the fleet, a streaming log, Merge & Deploy, the phone layout", async ({ browser }) => {
  const gh = new FakeGitHub();
  await gh.start();
  await gh.pr({ number: 42, title: "flake.lock: update nixpkgs", labels: ["dependencies"], mergeable: true });
  const server = new Server(PORT, gh.env());
  await server.start();
  const admin = await loginApi(server.base);
  // Commands that take a moment and say what they do, so a log streams on camera.
  const config = commandConfig({
    test: 'for t in disk clock dns nginx postgres backups; do echo "checking $t"; sleep 0.4; echo "  $t: ok"; done',
    switch: 'echo "building the system"; sleep 1; echo "activating"; sleep 1; echo "done"',
  });
  const agents: Agent[] = [];
  const checkouts: Record<string, string> = {};
  try {
    for (const h of HOSTS) {
      const token = await createHost(admin, { hostname: h.hostname, location: h.location });
      if (h.tags.length) {
        const r = await admin.api.patch(`/api/hosts/${h.hostname}`, { headers: { "X-CSRF-Token": admin.csrf }, data: { tags: h.tags } });
        expect(r.status(), await r.text()).toBe(200);
      }
      checkouts[h.hostname] = gh.checkout(h.hostname);
      const agent = new Agent(h.hostname, token, server.base, ["--repo-dir", checkouts[h.hostname], "--branch", "main", "--config", config]);
      agent.start();
      agents.push(agent);
    }
    // One host's checkout is a commit behind main: its git compartment says so.
    const work = join(gh.dir, "work");
    git(work, "checkout", "-q", "main");
    writeFileSync(join(work, "README.md"), "fleet configuration\n");
    git(work, "add", "README.md");
    git(work, "commit", "-qm", "docs: a README");
    git(work, "push", "-q", "origin", "HEAD:main");
    for (const h of HOSTS.filter((h) => h.hostname !== "laptop")) git(checkouts[h.hostname], "pull", "-q", "--ff-only");

    const context = await browser.newContext({ viewport: DESKTOP, colorScheme: "dark" });
    const page = await context.newPage();
    await loginUi(page, server.base);
    for (const h of HOSTS) {
      const row = page.locator(`tr[data-host-id="${h.hostname}"]`);
      await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/);
      await expect(row.locator('[data-compartment="git"] .compartment-indicator--unknown')).toHaveCount(0);
    }
    await expect(page.locator('tr[data-host-id="laptop"] [data-compartment="git"] .compartment-indicator--outdated')).toBeVisible();
    await expect(page.getByTestId("pending-pr").first()).toContainText("PR #42");
    await shot(page, "fleet");

    // A streaming log: Test on db-1, caught half-way.
    const db = page.locator('tr[data-host-id="db-1"]');
    await db.locator("button.btn-test").click();
    await expect(page.locator(".log-lines")).toContainText("dns: ok");
    await page.locator(".log-panel").scrollIntoViewIfNeeded();
    await shot(page, "log");
    await expect(page.locator(".log-lines")).toContainText("backups: ok");

    // Merge & Deploy: the update PR merged and rolled out, caught while hosts switch.
    await page.reload();
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    await page.locator("#bulk-actions-menu > summary").click();
    await page.getByTestId("menu-merge-deploy").click();
    await expect(page.locator(".modal[role=dialog]")).toContainText("PR #42");
    await page.locator(".modal button.confirm").click();
    const panel = page.getByTestId("deploy-panel");
    await expect(panel.locator('[data-testid="deploy-host"][data-state="running"]').first()).toBeVisible({ timeout: 60_000 });
    await shot(page, "deploy");
    await expect(panel).toHaveAttribute("data-phase", "done", { timeout: 120_000 });
    await context.close();

    // The phone layout: each host a card, in the light theme.
    const phone = await browser.newContext({ viewport: PHONE, colorScheme: "light", isMobile: true, hasTouch: true });
    const mobile = await phone.newPage();
    await loginUi(mobile, server.base);
    await expect(mobile.locator('tr[data-host-id="web-1"] .status-indicator')).toHaveClass(/\bstatus-ripple\b/);
    await shot(mobile, "mobile");
    await phone.close();
  } finally {
    for (const a of agents) await a.stop("SIGKILL");
    await server.stop();
    gh.stop();
  }
});
