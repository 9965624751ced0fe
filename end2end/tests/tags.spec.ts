// Host tags in the page: the agent's --tags show in the row, `tag:` filters, and an edit
// from the ⋮ menu (location and tags) reaches every open page without a reload. The header
// counts hosts online / tagged per tag, live, and a count sets the tag: filter (issue 18).
import { expect, test } from "@playwright/test";
import { Agent, BASE, createHost, loginApi, loginUi } from "./fleet";

test("tags show in the row and in the header's counts, filter with tag:, and an edit reaches another page live", async ({ browser }) => {
  const admin = await loginApi();
  const stamp = Date.now();
  const web = `tagweb-${stamp}`;
  const db = `tagdb-${stamp}`;
  const agents = [
    new Agent(web, await createHost(admin, { hostname: web }), BASE, ["--tags", `web,c${stamp}`]),
    new Agent(db, await createHost(admin, { hostname: db }), BASE, []),
  ];
  // Nine more tags, sorting after the others: past the header's first 8.
  const many = `tagmany-${stamp}`;
  const extra = Array.from({ length: 9 }, (_, i) => `z${stamp}-${i + 1}`);
  agents.push(new Agent(many, await createHost(admin, { hostname: many }), BASE, ["--tags", extra.join(",")]));
  agents.forEach((a) => a.start());
  const editor = await browser.newPage();
  const watcher = await browser.newPage();
  const errors: string[] = [];
  for (const p of [editor, watcher]) p.on("pageerror", (e) => errors.push(e.message));
  try {
    await loginUi(editor);
    await loginUi(watcher);
    const webRow = editor.locator(`tr[data-host-id="${web}"]`);
    // The agent's tags, sorted, as chips in the row.
    await expect(webRow.locator(".tag")).toHaveText([`c${stamp}`, "web"], { timeout: 15_000 });
    await expect(editor.locator(`tr[data-host-id="${db}"] .tag`)).toHaveCount(0);

    // The header shows the first 8 counts, then "+N more", which shows the rest in place,
    // each a count like the others; "fewer" hides them again.
    const counts = watcher.locator(".tag-counts");
    const more = counts.locator("button.tag-more");
    const last = counts.locator(`button[data-tag="${extra[8]}"]`);
    await expect(more).toHaveText(/^\+\d+ more$/, { timeout: 15_000 });
    await expect(more).toHaveAttribute("aria-expanded", "false");
    await expect(last).toHaveCount(0);
    const hidden = Number((await more.textContent())!.match(/\d+/)![0]);
    await more.click();
    await expect(more).toHaveText("fewer");
    await expect(more).toHaveAttribute("aria-expanded", "true");
    await expect(counts.locator("button.tag-count")).toHaveCount(8 + hidden);
    await expect(last).toHaveText(`${extra[8]} 1/1`);
    await last.click();
    await expect(watcher.locator("input.host-filter")).toHaveValue(`tag:${extra[8]}`);
    await expect(watcher.locator("tr[data-host-id]")).toHaveCount(1);
    await expect(watcher.locator(`tr[data-host-id="${many}"]`)).toBeVisible();
    await more.click();
    await expect(last).toHaveCount(0);
    await expect(counts.locator("button.tag-count")).toHaveCount(8);
    // The rest of the test reads counts wherever they sort, so all of them stay shown.
    await more.click();

    // The header counts the tag's hosts online / in all; a click filters the list to them.
    const cCount = counts.locator(`button[data-tag="c${stamp}"]`);
    await expect(cCount).toHaveText(`c${stamp} 1/1`, { timeout: 15_000 });
    await expect(counts.locator(`button[data-tag="db-${stamp}"]`)).toHaveCount(0);
    await cCount.click();
    await expect(watcher.locator("input.host-filter")).toHaveValue(`tag:c${stamp}`);
    await expect(watcher.locator("tr[data-host-id]")).toHaveCount(1);
    await expect(watcher.locator(`tr[data-host-id="${web}"]`)).toBeVisible();

    // tag: matches whole tags only.
    await watcher.locator("input.host-filter").fill(`tag:c${stamp}`);
    await expect(watcher.locator("tr[data-host-id]")).toHaveCount(1);
    await expect(watcher.locator(`tr[data-host-id="${web}"]`)).toBeVisible();
    await watcher.locator("input.host-filter").fill(`tag:db-${stamp}`);
    await expect(watcher.locator("tr[data-host-id]")).toHaveCount(0);

    // Edit the db host from the ⋮ menu: a bad tag is refused inline, nothing saved.
    const dbRow = editor.locator(`tr[data-host-id="${db}"]`);
    await dbRow.locator("details.host-menu summary").click();
    await dbRow.locator('button[data-command="edit"]').click();
    const dialog = editor.locator('[data-testid="host-edit"]');
    await expect(dialog).toBeVisible();
    await dialog.locator("input[name=tags]").fill("ok no/slash");
    await dialog.locator("button[type=submit]").click();
    await expect(dialog.locator(".form-error")).toContainText("“no/slash” is not a tag");
    await dialog.locator("input[name=tags]").fill(`db-${stamp}, primary`);
    await dialog.locator("input[name=location]").fill("rack 9");
    await dialog.locator("button[type=submit]").click();
    await expect(dialog).toBeHidden();

    // Both pages show it without a reload; the watcher's filter now finds the host.
    await expect(dbRow.locator(".tag")).toHaveText([`db-${stamp}`, "primary"]);
    await expect(dbRow.locator(".location")).toHaveText("rack 9");
    await expect(watcher.locator(`tr[data-host-id="${db}"]`)).toBeVisible();
    await expect(watcher.locator(`tr[data-host-id="${db}"] .tag`)).toHaveText([`db-${stamp}`, "primary"]);
    // The edit reaches the header's counts too: the db host's agent runs, so 1/1.
    await expect(counts.locator(`button[data-tag="db-${stamp}"]`)).toHaveText(`db-${stamp} 1/1`);

    // The agent's own tags are shown in the dialog, not editable there.
    await webRow.locator("details.host-menu summary").click();
    await webRow.locator('button[data-command="edit"]').click();
    await expect(dialog.locator('[data-testid="agent-tags"]')).toContainText(`c${stamp}, web`);
    await expect(dialog.locator("input[name=tags]")).toHaveValue("");
    await dialog.locator("button.cancel").click();
    await expect(dialog).toBeHidden();

    // The REST view agrees.
    const r = await admin.api.get("/api/hosts");
    const host = (await r.json()).find((h: { id: string }) => h.id === db);
    expect(host.tags).toEqual([`db-${stamp}`, "primary"]);
    expect(host.location).toBe("rack 9");

    // The web host's agent stops: its tags' counts drop to 0 online, the host still counted.
    await agents[0].stop();
    await expect(cCount).toHaveText(`c${stamp} 0/1`, { timeout: 15_000 });
    await expect(counts.locator(`button[data-tag="db-${stamp}"]`)).toHaveText(`db-${stamp} 1/1`);
  } finally {
    await Promise.all(agents.map((a) => a.stop("SIGKILL")));
  }
  expect(errors).toEqual([]);
});
