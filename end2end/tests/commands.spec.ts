// Commands from the dashboard: buttons follow the host's state, output streams in live.
import { expect, Page, test } from "@playwright/test";
import { Agent, BASE, commandConfig, createHost, loginApi, loginUi } from "./fleet";


test("Pull streams its output and frees the host; Test becomes Stop, and Stop ends it", async ({ page }) => {
  const errors: string[] = [];
  page.on("console", (m) => m.type() === "error" && errors.push(m.text()));
  page.on("pageerror", (e) => errors.push(e.message));

  const admin = await loginApi();
  const hostname = `cmd-${Date.now()}`;
  const config = commandConfig({
    pull: 'i=1; while [ $i -le 40 ]; do echo "pulling step $i"; sleep 0.05; i=$((i+1)); done; echo "<b>done</b>" >&2',
    test: "echo testing; exec sleep 1000",
  });
  const agent = new Agent(hostname, await createHost(admin, { hostname }), BASE, ["--config", config]);
  agent.start();
  try {
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${hostname}"]`);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/, { timeout: 15_000 });
    const pull = row.locator("button.btn-pull");
    await expect(pull).toBeEnabled();

    await pull.click();
    // Busy: the row shows the command and the buttons follow.
    await expect(row.locator(".progress-badge-mini")).toHaveText("pull");
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-running\b/);
    await expect(pull).toBeDisabled();
    const panel = page.locator(".log-panel");
    await expect(panel.locator(".log-host")).toHaveText(hostname);
    await expect(panel.locator(".log-line").first()).toHaveText("pulling step 1");
    await expect(panel.locator(".log-line:not(.log-end)")).toHaveCount(41, { timeout: 20_000 });
    // The run ends with a line naming its status and exit code.
    await expect(panel.locator(".log-line.log-end")).toHaveText(/^— ok, exit 0, \d+\.\d s$/);
    // Hostile output is text, and stderr is marked.
    await expect(panel.locator(".log-line.stderr")).toHaveText("<b>done</b>");
    await expect(panel.locator(".log-status")).toHaveText("ok");
    await expect(row.locator(".progress-badge-mini")).toHaveCount(0);
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-ripple\b/);
    await expect(pull).toBeEnabled();

    // Test turns into Stop while it runs; Stop ends it.
    const testButton = row.locator("button.btn-test");
    await testButton.click();
    const stop = row.locator("button.btn-stop");
    await expect(stop).toHaveText("Stop");
    await expect(stop).toBeEnabled();
    await expect(panel.locator(".log-line").first()).toHaveText("testing");
    await stop.click();
    await expect(panel.locator(".log-status")).toHaveText("stopped", { timeout: 15_000 });
    await expect(panel.locator(".log-line.log-end")).toContainText("— stopped");
    await expect(row.locator("button.btn-test")).toHaveText("Test");
    await expect(row.locator("button.btn-test")).toBeEnabled();

    // Offline: nothing can be started.
    await agent.stop("SIGTERM");
    await expect(row.locator(".status-indicator")).toHaveClass(/\bstatus-offline\b/, { timeout: 15_000 });
    await expect(pull).toBeDisabled();
  } finally {
    await agent.stop("SIGKILL");
  }
  expect(errors).toEqual([]);
});
