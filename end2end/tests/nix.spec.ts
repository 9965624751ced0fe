// DRAFT, not run yet: Nix-native switching from the page (previews and the fleet diff,
// generations and rollback to one, boot, rolled_back, reboot needed). It needs the server
// side of the next stage (results stored and broadcast, generations and reboot_needed taken
// from `register`/`status`); finish and run it once that is merged.
//
// The hosts here are hand-driven links (`RawAgent`): they register with generations, and the
// test answers each command with the `command_complete` a real agent would send, with its
// `result`. Command ids come from the host's history, newest first.
import { expect, Page, test } from "@playwright/test";
import { Admin, BASE, createHost, loginApi, loginUi, RawAgent } from "./fleet";

const generations = [
  { number: 41, created_at: "2026-11-20T10:00:00Z", store_path: "/nix/store/a1-nixos-system-h-26.05.1", current: false, booted: true },
  { number: 42, created_at: "2026-11-25T17:00:00Z", store_path: "/nix/store/b2-nixos-system-h-26.05.2", current: true, booted: false },
];

async function rawHost(admin: Admin, prefix: string, extra: Record<string, unknown> = {}): Promise<{ id: string; link: RawAgent }> {
  const id = `${prefix}-${Date.now()}-${Math.floor(Math.random() * 1000)}`;
  const link = await RawAgent.connect(BASE, await createHost(admin, { hostname: id }));
  link.send({
    type: "register",
    payload: { hostname: id, host_type: "nixos", agent_version: process.env.NIXDECK_VERSION ?? "0.1.0", generations, ...extra },
  });
  link.send({ type: "heartbeat", payload: { metrics: null } });
  return { id, link };
}

/** The id of the host's newest command, once there is one of this kind. */
async function latestCommand(admin: Admin, host: string, kind: string): Promise<string> {
  let id = "";
  await expect
    .poll(async () => {
      const list = await (await admin.api.get(`/api/hosts/${host}/commands?limit=1`)).json();
      id = list[0]?.command === kind ? list[0].command_id : "";
      return id;
    }, { timeout: 10_000 })
    .not.toBe("");
  return id;
}

function complete(link: RawAgent, command_id: string, status: string, result?: unknown): void {
  link.send({ type: "command_complete", payload: { command_id, status, exit_code: status === "ok" ? 0 : 1, duration_ms: 5, last_seq: 0, result } });
}

async function openMenu(page: Page, host: string): Promise<void> {
  await page.locator(`tr[data-host-id="${host}"] details.host-menu > summary`).click();
}

const diff = (reboot: boolean) => ({
  diff: {
    changes: [
      { name: "openssl", old: "3.0.14", new: "3.0.15", kind: "upgraded" },
      { name: "zlib", old: null, new: "1.3", kind: "added" },
    ],
    closure_bytes_before: 1_000_000_000,
    closure_bytes_after: 1_100_000_000,
    reboot_needed: reboot,
  },
  store_path: "/nix/store/c3-nixos-system-h-26.05.3",
});

test("previews of two hosts make one fleet diff; Switch to previewed asks, then switches that host", async ({ page }) => {
  const admin = await loginApi();
  const a = await rawHost(admin, "pva");
  const b = await rawHost(admin, "pvb");
  try {
    await loginUi(page);
    // Preview from the ⋮ menu: no confirm.
    await openMenu(page, a.id);
    await page.locator(`tr[data-host-id="${a.id}"] button[data-command=preview]`).click();
    complete(a.link, await latestCommand(admin, a.id, "preview"), "ok", diff(true));
    // And from the bulk menu, for the selection.
    await page.locator(`tr[data-host-id="${b.id}"] input.select-host`).click();
    await page.locator("#bulk-actions-menu > summary").click();
    await page.locator('#bulk-actions-menu button[data-command="preview"][data-scope="selected"]').click();
    complete(b.link, await latestCommand(admin, b.id, "preview"), "ok", diff(false));
    await page.locator(`tr[data-host-id="${b.id}"] input.select-host`).click(); // unselect: all previews

    const panel = page.locator('[data-testid="diff-panel"]');
    await expect(panel).toBeVisible();
    const openssl = panel.locator('[data-testid="diff-change"][data-package="openssl"]');
    await expect(openssl).toHaveAttribute("data-kind", "upgraded");
    await expect(openssl).toContainText("openssl 3.0.14 → 3.0.15 on 2 hosts");
    await openssl.locator("summary").click();
    await expect(openssl.locator(".diff-change-hosts")).toContainText(a.id);
    await expect(panel.locator('[data-testid="diff-reboot"]')).toContainText(`reboot needed on 1: ${a.id}`);
    await expect(panel.locator('[data-testid="diff-switch-all"]')).toContainText("(2)");

    await panel.locator(`[data-testid="diff-switch-host"][data-host="${a.id}"]`).click();
    await expect(page.locator(".modal h2")).toHaveText(`Switch ${a.id} to its preview`);
    await page.locator(".modal button.confirm").click();
    const switchId = await latestCommand(admin, a.id, "switch");
    // TODO once merged: GET /api/commands/{switchId} names the preview's store path.
    complete(a.link, switchId, "ok", { generation: 43 });
    // A switch that took makes the host's preview stale: it leaves the panel.
    await expect(panel.locator(`[data-testid="diff-host"][data-host="${a.id}"]`)).toHaveCount(0);
    await expect(panel.locator(`[data-testid="diff-host"][data-host="${b.id}"]`)).toBeVisible();
  } finally {
    a.link.close();
    b.link.close();
  }
});

test("Generations… lists them newest first and rolls back to one after a confirm", async ({ page }) => {
  const admin = await loginApi();
  const h = await rawHost(admin, "gens", { reboot_needed: true });
  try {
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${h.id}"]`);
    await expect(row.locator(".hostname[data-reboot-needed]")).toBeVisible({ timeout: 15_000 });
    await openMenu(page, h.id);
    await row.locator("button[data-command=generations]").click();
    const panel = page.locator(`[data-testid="generations-panel"][data-host="${h.id}"]`);
    const rows = panel.locator('[data-testid="generation"]');
    await expect(rows).toHaveCount(2);
    await expect(rows.first()).toHaveAttribute("data-generation", "42");
    await expect(rows.first()).toHaveAttribute("data-current", "true");
    await expect(rows.first().locator(".generation-name")).toHaveText("nixos-system-h-26.05.2");
    // Only the other generation offers a rollback.
    await expect(panel.locator('[data-testid="generation-rollback"]')).toHaveCount(1);
    await panel.locator('[data-testid="generation-rollback"][data-generation="41"]').click();
    await expect(page.locator(".modal p")).toHaveText(`Switch ${h.id} to generation 41 now?`);
    await page.locator(".modal button.confirm").click();
    await latestCommand(admin, h.id, "rollback");
    // TODO once merged: the command's detail carries generation 41.
    await panel.locator('[data-testid="generations-close"]').click();
    await expect(panel).toHaveCount(0);
  } finally {
    h.link.close();
  }
});

test("Boot asks first; a rolled-back switch reads as a failure in the log, its notice and the history", async ({ page }) => {
  const admin = await loginApi();
  const h = await rawHost(admin, "rb");
  try {
    await loginUi(page);
    const row = page.locator(`tr[data-host-id="${h.id}"]`);
    await openMenu(page, h.id);
    await row.locator("button[data-command=boot]").click();
    await expect(page.locator(".modal h2")).toHaveText(`Boot ${h.id} into its new build`);
    await page.locator(".modal button.confirm").click();
    complete(h.link, await latestCommand(admin, h.id, "boot"), "ok", { generation: 43 });

    await row.locator("button.btn-switch").click();
    complete(h.link, await latestCommand(admin, h.id, "switch"), "rolled_back", { generation: 42 });
    const panel = page.locator(".log-panel");
    await expect(panel.locator(".log-status")).toHaveText("rolled back");
    await expect(panel.locator(".log-status")).toHaveAttribute("data-status", "rolled back");
    await expect(panel.locator(".log-line.log-end")).toContainText("— rolled back");
    await expect(page.locator(".notice.error")).toContainText(`${h.id}: rolled back`);
    await panel.locator(".log-history-toggle").click();
    await expect(panel.locator('.history-item[data-status="rolled_back"] .history-status').first()).toHaveText("rolled back");
  } finally {
    h.link.close();
  }
});

// TODO: Merge & Deploy with rollout options (needs deploy.spec.ts's FakeGitHub set-up): open
// `[data-testid="menu-merge-deploy"]`, open `[data-testid="deploy-options"]`, fill
// `deploy-canary`, `deploy-batch-size`, `deploy-max-failures`, `deploy-soak`, choose
// `deploy-on-failure` = rollback-and-halt, confirm, and check the job's waves; a batch size of
// 0 keeps the dialog open with `[data-testid="deploy-options-error"]`. A rolled-back host's
// chip is `[data-testid="deploy-host"][data-state="rolled_back"]` and counts as failed.
