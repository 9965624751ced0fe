import { defineConfig } from "@playwright/test";
import { chromiumLaunch } from "./chromium";

// `make screenshots` (scripts/screenshots.sh): the README's pictures, taken from the real
// app. Not part of `make test`: its own folder, so the suite's config never sees it. The
// spec starts its own dashboard, fake GitHub and agents.
export default defineConfig({
  testDir: "./screenshots",
  timeout: 180_000,
  expect: { timeout: 20_000 },
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  use: { browserName: "chromium", headless: true, launchOptions: chromiumLaunch },
});
