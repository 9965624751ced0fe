import { defineConfig } from "@playwright/test";
import { chromiumLaunch } from "./chromium";

// The server is started by scripts/e2e.sh (fresh database, known admin password); the
// tests start and stop real agent processes themselves.
export default defineConfig({
  testDir: "./tests",
  timeout: 90_000,
  expect: { timeout: 10_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  use: {
    baseURL: process.env.BASE_URL ?? "http://127.0.0.1:3900",
    browserName: "chromium",
    headless: true,
    launchOptions: chromiumLaunch,
  },
});
