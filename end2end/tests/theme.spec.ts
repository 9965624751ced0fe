// Themes: light and dark, following the browser's prefers-color-scheme until the user picks
// one in the header's theme menu; the pick is kept per user on the server (the shell renders
// it on <html data-theme>), so it survives a reload and a new login.
import { Browser, expect, Page, test } from "@playwright/test";
import { loginApi, loginUi } from "./fleet";

test.use({ colorScheme: "dark" });

const DARK_BG = "rgb(26, 27, 38)"; // --bg, dark (style/main.css)
const LIGHT_BG = "rgb(244, 245, 248)"; // --bg, light

const bodyBackground = (page: Page) => page.evaluate(() => getComputedStyle(document.body).backgroundColor);

/**
 * WCAG contrast of each selector's text against the background it is drawn on (the nearest
 * ancestor with an opaque background), for the first element that matches.
 */
async function contrasts(page: Page, selectors: string[]): Promise<Record<string, number>> {
  return page.evaluate((selectors) => {
    const rgb = (c: string) => (c.match(/[\d.]+/g) ?? []).map(Number);
    const lum = ([r, g, b]: number[]) => {
      const f = (v: number) => {
        v /= 255;
        return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const backdrop = (el: Element | null): number[] => {
      for (; el; el = el.parentElement) {
        const c = rgb(getComputedStyle(el).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const out: Record<string, number> = {};
    for (const s of selectors) {
      const el = document.querySelector(s);
      if (!el) {
        out[s] = -1;
        continue;
      }
      // A brightness() filter (a host's own colour on light) scales the text's colour.
      const dim = Number(/brightness\(([\d.]+)\)/.exec(getComputedStyle(el).filter)?.[1] ?? 1);
      const a = lum(rgb(getComputedStyle(el).color).slice(0, 3).map((v) => v * dim));
      const b = lum(backdrop(el));
      out[s] = Math.round(((Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)) * 100) / 100;
    }
    return out;
  }, selectors);
}

// Text on the dashboard in each theme: the header, a row's host, type and generation,
// a compartment's name and state, a row button, the theme menu, the footer.
const TEXTS = [
  ".fleet-count",
  ".account-link",
  ".theme-menu > summary",
  'tr[data-host-id="theme-a"] .hostname',
  'tr[data-host-id="theme-a"] .host-type',
  'tr[data-host-id="theme-a"] [data-compartment="git"] .compartment-name',
  'tr[data-host-id="theme-a"] [data-compartment="git"] .compartment-code',
  'tr[data-host-id="theme-a"] button.btn-pull',
  ".footer",
];

async function expectReadable(page: Page) {
  const found = await contrasts(page, TEXTS);
  for (const [selector, ratio] of Object.entries(found)) {
    expect(ratio, `contrast of ${selector}: ${JSON.stringify(found)}`).toBeGreaterThanOrEqual(4.5);
  }
}

async function newLogin(browser: Browser): Promise<Page> {
  const context = await browser.newContext({ colorScheme: "dark" });
  const page = await context.newPage();
  await loginUi(page);
  return page;
}

test("the page follows a dark browser, the theme menu switches to light, and the pick survives a reload and a new login", async ({
  page,
  browser,
}) => {
  const admin = await loginApi();
  await admin.api.post("/api/hosts", {
    headers: { "X-CSRF-Token": admin.csrf },
    data: { hostname: "theme-a", host_type: "nixos", location: null },
  });
  try {
    await loginUi(page);
    const menu = page.getByTestId("theme-menu");
    const choose = async (p: Page, theme: string) => {
      await p.getByTestId("theme-menu").locator("summary").click();
      await p.locator(`[data-theme-choice="${theme}"]`).click();
    };
    const checked = async (p: Page) => {
      await p.getByTestId("theme-menu").locator("summary").hover();
      return p.getByTestId("theme-menu").locator('[aria-checked="true"]');
    };
    // Nothing picked yet: the page follows the browser, which prefers dark.
    await expect(page.locator("html")).toHaveAttribute("data-theme", "system");
    // The menu's button names the choice (CSS generated content, from the attribute).
    const named = () => menu.locator("summary").evaluate((e) => getComputedStyle(e, "::after").content);
    expect(await named()).toBe('": system"');
    expect(await bodyBackground(page)).toBe(DARK_BG);
    await expect(page.locator('tr[data-host-id="theme-a"]')).toBeVisible();
    await expectReadable(page);
    await expect(await checked(page)).toHaveAttribute("data-theme-choice", "system");

    // Light, at once and kept on the server.
    const saved = page.waitForResponse((r) => r.url().endsWith("/api/account/theme") && r.request().method() === "PUT");
    await choose(page, "light");
    expect((await saved).status()).toBe(200);
    await expect.poll(() => bodyBackground(page)).toBe(LIGHT_BG);
    expect(await named()).toBe('": light"');
    await expectReadable(page);

    // A reload renders it from the server: light from the first paint.
    await page.reload();
    await expect(page.locator("html")).toHaveAttribute("data-theme", "light");
    expect(await bodyBackground(page)).toBe(LIGHT_BG);
    await page.waitForFunction(() => (window as any).__nixdeck_hydrated === true);
    await expect(await checked(page)).toHaveAttribute("data-theme-choice", "light");

    // A new login elsewhere (a dark browser again): the dashboard the login form opens
    // without a reload is in the user's light.
    const other = await newLogin(browser);
    await expect(other.locator("html")).toHaveAttribute("data-theme", "light");
    expect(await bodyBackground(other)).toBe(LIGHT_BG);
    await expect(await checked(other)).toHaveAttribute("data-theme-choice", "light");
    await other.context().close();

    // Dark by choice, even in a light browser; then back to following the browser.
    await page.emulateMedia({ colorScheme: "light" });
    await choose(page, "dark");
    await expect.poll(() => bodyBackground(page)).toBe(DARK_BG);
    await expectReadable(page);
    await choose(page, "system");
    await expect.poll(() => bodyBackground(page)).toBe(LIGHT_BG);
  } finally {
    // The admin of the shared e2e database follows the browser again.
    await admin.api.put("/api/account/theme", { headers: { "X-CSRF-Token": admin.csrf }, data: { theme: "system" } });
    await admin.api.delete("/api/hosts/theme-a", { headers: { "X-CSRF-Token": admin.csrf } });
  }
});
