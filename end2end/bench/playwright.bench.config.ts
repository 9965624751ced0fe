import { defineConfig } from "@playwright/test";
import { chromiumLaunch } from "../chromium";
import { existsSync } from "node:fs";
import { join } from "node:path";

// The server binary fleet.ts starts: the release build when there is one, else the debug
// build (fleet.ts's default). Either serves the site in target/site, whose wasm is what the
// browser figures measure.
const release = join(__dirname, "../../target/release/nixdeck");
if (!process.env.NIXDECK_SERVER_BIN && existsSync(release)) process.env.NIXDECK_SERVER_BIN = release;

// Benchmarks (docs/BENCHMARKS.md), kept out of the normal suite (whose testDir is ./tests). They print
// figures and never fail on timing. Run from end2end/:
//   npx playwright test -c bench/playwright.bench.config.ts
// Each benchmark starts its own server (fleet.ts `Server`) on its own port and database.
export default defineConfig({
  testDir: ".",
  testMatch: "*.bench.ts",
  outputDir: "../test-results/bench-artifacts",
  timeout: 4 * 60 * 60_000,
  // Logging in (an Argon2 check in a debug build on a busy machine) can take a while.
  expect: { timeout: 120_000 },
  fullyParallel: false,
  workers: 1,
  retries: 0,
  reporter: [["list"]],
  use: {
    browserName: "chromium",
    headless: true,
    viewport: { width: 1280, height: 800 },
    launchOptions: chromiumLaunch,
  },
});
