// The demo `make run` starts (scripts/demo.sh, the part of scripts/run.sh after the build),
// in a temporary folder on a port of its own: a newcomer sees the desired state at work.
import { expect, test } from "@playwright/test";
import { ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { BASE, loginUi } from "./fleet";

const ROOT = join(__dirname, "../..");

test("make run's demo has a desired state: git and lock start behind, and Pull turns them green", async ({ page }) => {
  test.setTimeout(60_000);
  const data = mkdtempSync(join(tmpdir(), "nixdeck-demo-"));
  const port = Number(process.env.E2E_DEMO_PORT ?? Number(new URL(BASE).port) + 5);
  const base = `http://127.0.0.1:${port}`;
  let out = "";
  const demo: ChildProcess = spawn(join(ROOT, "scripts/demo.sh"), [], {
    env: { ...process.env, NIXDECK_DEMO_DATA: data, NIXDECK_LISTEN: `127.0.0.1:${port}` },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const keep = (d: Buffer) => {
    out = (out + d.toString()).slice(-20_000);
  };
  demo.stdout?.on("data", keep);
  demo.stderr?.on("data", keep);
  const exited = new Promise((resolve) => demo.once("exit", resolve));
  try {
    await expect.poll(() => out, { timeout: 30_000, message: "the demo's banner" }).toContain("nixdeck is running");
    const password = readFileSync(join(data, "admin-password"), "utf8").trim();
    await loginUi(page, base, "admin", password);

    const row = page.locator("tr[data-host-id]").first();
    await expect(row).toBeVisible();
    // The desired state is configured: the head of the fake GitHub's main.
    await expect(page.getByTestId("desired-commit").first()).toHaveText(/^[0-9a-f]{7}$/, { timeout: 15_000 });
    // The checkout starts two commits behind (a new version, then a flake.lock update).
    const git = row.locator('[data-compartment="git"]');
    const lock = row.locator('[data-compartment="lock"]');
    await expect(git.locator(".compartment-indicator--outdated")).toBeVisible({ timeout: 15_000 });
    await expect(git).toHaveAttribute("title", /Pull to update/);
    await expect(lock.locator(".compartment-indicator--outdated")).toBeVisible();
    // The demo's flake.lock update PR is waiting for Merge & Deploy.
    await expect(page.getByTestId("pending-pr").first()).toContainText("PR #1");

    await row.locator("button.btn-pull").click();
    await expect(git.locator(".compartment-indicator--ok")).toBeVisible({ timeout: 20_000 });
    await expect(lock.locator(".compartment-indicator--ok")).toBeVisible();
  } catch (e) {
    console.log(out);
    throw e;
  } finally {
    demo.kill("SIGTERM");
    await exited;
    rmSync(data, { recursive: true, force: true });
  }
  // Stopping the demo stops everything it started: nothing answers on its port.
  await expect(fetch(`${base}/healthz`)).rejects.toThrow();
});
