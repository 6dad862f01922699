// The web client driving the real pi CLI (pinned in tests/agents, installed
// by scripts/setup-agents) against the project's fake LLM (AGENTS.md
// section 4), through the real daemon and its pi adapter.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { after, before, test } from "node:test";
import { ROOT, WAIT, screenshot, startBrowser, startDaemon, tempDir } from "./harness.mjs";

const PI = join(ROOT, "tests", "agents", "node_modules", ".bin", "pi");
const TARGET = process.env.CARGO_TARGET_DIR ? join(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target");
const FAKE_LLM = join(TARGET, "debug", "fake-llm");
const AGENT_WAIT = 60_000;

let llm;
let daemon;
let browser;
let home;
let work;

before(async () => {
  for (const [path, how] of [
    [PI, "run scripts/setup-agents (scripts/test does) to install the pinned pi CLI"],
    [FAKE_LLM, "build it with 'cargo build -p amarre-e2e --bins' (scripts/test does)"],
  ]) {
    if (!existsSync(path)) throw new Error(`${path} is missing: ${how}`);
  }
  llm = spawn(FAKE_LLM, ["--seconds", "600"], { stdio: ["ignore", "pipe", "inherit"] });
  const url = await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("the fake LLM did not start")), WAIT);
    createInterface({ input: llm.stdout }).once("line", (l) => {
      clearTimeout(t);
      resolve(l.trim());
    });
  });
  home = tempDir("pi-home");
  work = tempDir("pi-work");
  mkdirSync(join(home, "agent"), { recursive: true });
  writeFileSync(
    join(home, "agent", "models.json"),
    JSON.stringify({
      providers: { fake: { baseUrl: url, api: "anthropic-messages", apiKey: "dummy", models: [{ id: "fake-model" }] } },
    }),
  );
  daemon = await startDaemon([
    {
      id: "pi",
      agent: "pi",
      env: {
        PI_BIN: PI,
        PI_CODING_AGENT_DIR: join(home, "agent"),
        PI_OFFLINE: "1",
        PI_SKIP_VERSION_CHECK: "1",
        HOME: home,
      },
      args: [
        "--no-session",
        "--offline",
        "--model",
        "fake/fake-model",
        "--no-extensions",
        "--no-skills",
        "--no-prompt-templates",
        "--no-context-files",
        "--no-themes",
      ],
    },
  ]);
  browser = await startBrowser();
});

after(async () => {
  await browser?.stop();
  await daemon?.stop();
  llm?.kill("SIGTERM");
  for (const d of [home, work]) if (d) rmSync(d, { recursive: true, force: true });
});

test("the real pi CLI: a streamed answer, then a tool allowed from the page", async () => {
  const page = await browser.newPage();
  page.setDefaultTimeout(AGENT_WAIT);
  await page.goto(`${daemon.url}/app/`);
  await page.getByRole("button", { name: "New session" }).click();
  const instance = page.getByRole("combobox", { name: "Instance" });
  await instance.selectOption("pi");
  await page.getByRole("textbox", { name: "Name" }).fill("real-pi");
  await page.getByRole("textbox", { name: "Working directory" }).fill(work);
  await page.getByRole("button", { name: "Start" }).click();
  await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
  const log = page.getByRole("log", { name: "Conversation" });
  await page.getByRole("textbox", { name: "Message" }).fill("hello pi");
  await page.getByRole("button", { name: "Send" }).click();
  await log.getByText("You said: hello pi").waitFor();
  await page.getByRole("textbox", { name: "Message" }).fill("Please RUN: touch from-the-page.txt");
  await page.getByRole("button", { name: "Send" }).click();
  await page.getByText("Run bash?").waitFor();
  await page.getByRole("button", { name: "Allow" }).click();
  await log.getByText(/^Done/).waitFor();
  assert.ok(existsSync(join(work, "from-the-page.txt")), "pi ran the allowed tool");
  await log.getByText("bash", { exact: true }).first().waitFor();
  await screenshot(page, "real-pi");
  await page.close();
});
