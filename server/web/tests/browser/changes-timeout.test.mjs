// The Changes view on a repository git cannot read within the review time
// limit, in real Chromium against the real daemon: the daemon answers 504
// (its documented setting AMARRE_REVIEW_TIMEOUT_MS, here 2 s), the view says
// so with a "Retry" button, and once the generated folder is ignored Retry
// shows the list. How long git takes over a big folder depends on the
// machine's load and page cache (50 000 files took 0.5 to 5 s here), so the
// daemon's git is the real one behind a wrapper that takes 30 s while
// nothing is ignored: the time limit, the killed process, the 504 and the
// Retry are all real, only the slowness is made certain.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fakeInstances, screenshot, startBrowser, startDaemon, tempDir, WAIT } from "./harness.mjs";

const TIME_LIMIT_MS = 2000;
const GENERATED_FILES = 2_000;

let daemon;
let browser;
let repo;
let bin;

function git(...args) {
  execFileSync("git", args, {
    cwd: repo,
    env: {
      ...process.env,
      GIT_AUTHOR_NAME: "t",
      GIT_AUTHOR_EMAIL: "t@example.invalid",
      GIT_COMMITTER_NAME: "t",
      GIT_COMMITTER_EMAIL: "t@example.invalid",
      GIT_CONFIG_GLOBAL: "/dev/null",
      GIT_CONFIG_NOSYSTEM: "1",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
}

before(async () => {
  repo = tempDir("huge");
  git("init", "-q", "-b", "main");
  writeFileSync(join(repo, "notes.txt"), "one\n");
  git("add", "-A");
  git("commit", "-q", "-m", "first");
  writeFileSync(join(repo, "notes.txt"), "one\ntwo\n");
  // A generated folder nobody ignored (removed at the end).
  for (let d = 0; d < GENERATED_FILES / 1000; d++) {
    const dir = join(repo, "generated", `d${d}`);
    mkdirSync(dir, { recursive: true });
    for (let f = 0; f < 1000; f++) writeFileSync(join(dir, `f${f}.txt`), "x\n");
  }
  // The daemon's `git`: the real one, 30 s late while nothing is ignored.
  bin = tempDir("slow-git");
  const realGit = execFileSync("sh", ["-c", "command -v git"]).toString().trim();
  const wrapper = join(bin, "git");
  writeFileSync(
    wrapper,
    `#!/bin/sh\n[ -e '${join(repo, ".gitignore")}' ] || exec sleep 30\nexec '${realGit}' "$@"\n`,
  );
  chmodSync(wrapper, 0o755);
  daemon = await startDaemon(fakeInstances(), {
    AMARRE_REVIEW_TIMEOUT_MS: String(TIME_LIMIT_MS),
    PATH: `${bin}:${process.env.PATH}`,
  });
  browser = await startBrowser();
});

after(async () => {
  await browser?.stop();
  await daemon?.stop();
  if (repo) rmSync(repo, { recursive: true, force: true });
  if (bin) rmSync(bin, { recursive: true, force: true });
});

describe("the Changes view over the time limit", () => {
  test("504 shows a clear message and a Retry button that reads the list again", async () => {
    const r = await daemon.api("POST", "/sessions", { instanceId: "fake", name: "huge", cwd: repo });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const page = await browser.newPage();
    const answers = [];
    page.on("response", (resp) => {
      if (new URL(resp.url()).pathname.endsWith("/changes")) answers.push(resp.status());
    });
    await page.goto(`${daemon.url}/app/#/s/${r.body.id}`);
    await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
    await page.getByRole("tab", { name: "Changes" }).click();

    const files = page.getByRole("region", { name: "Changed files" });
    const alert = files.getByRole("alert");
    await alert.waitFor({ timeout: WAIT + TIME_LIMIT_MS });
    assert.deepEqual(answers, [504], "the daemon answered the huge repository with 504");
    const text = await alert.innerText();
    assert.match(text, /too large/);
    assert.match(text, /time limit/);
    assert.equal(await files.getByRole("link").count(), 0);
    await screenshot(page, "changes-504");

    // The person ignores the generated folder, then retries.
    writeFileSync(join(repo, ".gitignore"), "generated/\n");
    await files.getByRole("button", { name: "Retry" }).click();
    await files.getByRole("link", { name: "notes.txt", exact: true }).waitFor();
    await files.getByRole("link", { name: ".gitignore", exact: true }).waitFor();
    assert.equal(await alert.count(), 0, "the error stays after a successful retry");
    assert.deepEqual(answers, [504, 200]);
    await page.close();
  });
});
