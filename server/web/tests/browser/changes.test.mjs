// The Changes view (PROTOCOL.md, 2.4.0: review) in real Chromium against the
// real daemon, on a real git repository: the changed files, a diff, the full
// file, a line comment that reaches the agent as a prompt, and the list read
// again when a turn ends, by the Refresh button and by pull-to-refresh.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fakeInstances, screenshot, startBrowser, startDaemon, tempDir, until } from "./harness.mjs";

let daemon;
let browser;
let repo;
let plain;

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
  repo = tempDir("repo");
  plain = tempDir("plain");
  git("init", "-q", "-b", "main");
  mkdirSync(join(repo, "src"));
  writeFileSync(join(repo, "src", "notes.txt"), "one\ntwo\nthree\n");
  writeFileSync(join(repo, "gone.txt"), "bye\n");
  git("add", "-A");
  git("commit", "-q", "-m", "first");
  // The work tree now differs: a line added, a file deleted, one untracked.
  writeFileSync(join(repo, "src", "notes.txt"), "one\ntwo\nthe added line\nthree\n");
  rmSync(join(repo, "gone.txt"));
  writeFileSync(join(repo, "fresh.txt"), `brand new ${"long-word-".repeat(40)}end\n`);
  writeFileSync(join(repo, "blob.bin"), Buffer.from([0, 1, 2, 255, 0, 7]));
  daemon = await startDaemon(fakeInstances());
  browser = await startBrowser();
});

after(async () => {
  await browser?.stop();
  await daemon?.stop();
  for (const d of [repo, plain]) if (d) rmSync(d, { recursive: true, force: true });
});

async function open(cwd) {
  const r = await daemon.api("POST", "/sessions", { instanceId: "fake", name: "review", cwd });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const page = await browser.newPage();
  await page.goto(`${daemon.url}/app/#/s/${r.body.id}`);
  await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
  return { page, id: r.body.id };
}

describe("the Changes view", () => {
  test("files, a diff, a line comment sent to the agent as a prompt, refreshed when a turn ends", async () => {
    const { page } = await open(repo);
    await page.getByRole("tab", { name: "Changes" }).click();
    const files = page.getByRole("region", { name: "Changed files" });
    await files.getByRole("link", { name: "src/notes.txt", exact: true }).waitFor();
    await files.getByRole("link", { name: "fresh.txt", exact: true }).waitFor();
    await files.getByRole("link", { name: "gone.txt", exact: true }).waitFor();
    const notesRow = files.getByRole("listitem").filter({ has: page.getByRole("link", { name: "src/notes.txt", exact: true }) });
    assert.match(await notesRow.innerText(), /modified[\s\S]*\+1[\s\S]*−0/);
    const goneRow = files.getByRole("listitem").filter({ has: page.getByRole("link", { name: "gone.txt", exact: true }) });
    assert.match(await goneRow.innerText(), /deleted[\s\S]*\+0[\s\S]*−1/);
    const freshRow = files.getByRole("listitem").filter({ has: page.getByRole("link", { name: "fresh.txt", exact: true }) });
    assert.match(await freshRow.innerText(), /untracked/);
    const blobRow = files.getByRole("listitem").filter({ has: page.getByRole("link", { name: "blob.bin", exact: true }) });
    assert.match(await blobRow.innerText(), /binary/);
    await screenshot(page, "changes");

    // The diff of one file: the added line is a button, coloured as an addition.
    await files.getByRole("link", { name: "src/notes.txt", exact: true }).click();
    const added = page.getByRole("button", { name: "the added line" });
    await added.waitFor();
    assert.match((await added.getAttribute("class")) ?? "", /\badd\b/);
    assert.equal(await page.getByRole("button", { name: "Comment" }).count(), 0);
    await screenshot(page, "changes-diff");

    // The full file, as text.
    await page.getByRole("button", { name: "Full file" }).click();
    await page.locator(".full-file").filter({ hasText: "the added line" }).waitFor();
    assert.equal(await page.locator(".full-file").innerText(), "one\ntwo\nthe added line\nthree\n");
    await page.getByRole("button", { name: "Diff" }).click();

    // A binary file's full view says so; a long line wraps within a phone's width.
    await page.getByRole("button", { name: "‹ Files" }).click();
    await files.getByRole("link", { name: "blob.bin", exact: true }).click();
    await page.getByRole("button", { name: "Full file" }).click();
    await page.getByText("binary file", { exact: true }).waitFor();
    await page.getByRole("button", { name: "‹ Files" }).click();
    await files.getByRole("link", { name: "fresh.txt", exact: true }).click();
    await page.getByRole("button", { name: /brand new long-word-/ }).waitFor();
    const widths = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(widths[0] <= widths[1], `the page overflows a phone: ${widths}`);
    await page.getByRole("button", { name: "‹ Files" }).click();
    await files.getByRole("link", { name: "src/notes.txt", exact: true }).click();

    // Select the line, comment: the composer holds path:line and the quoted line.
    await page.getByRole("button", { name: "the added line" }).click();
    await page.getByRole("button", { name: "Comment" }).click();
    const box = page.getByRole("textbox", { name: "Message" });
    const draft = await until("the composer filled", async () => {
      const v = await box.inputValue();
      return v.length > 0 ? v : null;
    });
    assert.ok(draft.startsWith("src/notes.txt:3\n"), draft);
    assert.ok(draft.includes("> +the added line"), draft);
    await box.fill(`${draft}Say why this line is here.`);
    await page.getByRole("button", { name: "Send" }).click();
    // The fake agent echoes the prompt it received.
    const conversation = page.getByRole("log", { name: "Conversation" });
    await conversation.getByText(/Echo: src\/notes\.txt:3/).waitFor();
    await until("the whole prompt echoed by the agent", async () =>
      /Echo: src\/notes\.txt:3\s+>?\s*\+the added line\s+Say why this line is here\./.test(await conversation.innerText()),
    );

    // Back on Changes, a turn that creates a file updates the list by itself.
    await page.getByRole("tab", { name: "Changes" }).click();
    await files.getByRole("link", { name: "src/notes.txt", exact: true }).waitFor();
    assert.equal(await files.getByRole("link", { name: "made.txt", exact: true }).count(), 0);
    const tabs = page.getByRole("tab", { name: "Conversation" });
    await tabs.click();
    await page.getByRole("textbox", { name: "Message" }).fill("TOOL made.txt");
    await page.getByRole("button", { name: "Send" }).click();
    await page.getByRole("tab", { name: "Changes" }).click();
    await page.getByRole("button", { name: "Allow" }).click();
    await files.getByRole("link", { name: "made.txt", exact: true }).waitFor();

    // Refresh reads the list again.
    writeFileSync(join(repo, "later.txt"), "x\n");
    await page.getByRole("button", { name: "Refresh" }).click();
    await until("later.txt listed", () => files.getByRole("link", { name: "later.txt", exact: true }).count());
    await page.close();
  });

  test("pull-to-refresh reads the list again; a short pull does not", async () => {
    const { page } = await open(repo);
    const reads = [];
    page.on("request", (r) => {
      if (new URL(r.url()).pathname.endsWith("/changes")) reads.push(r.url());
    });
    await page.getByRole("tab", { name: "Changes" }).click();
    const files = page.getByRole("region", { name: "Changed files" });
    await files.getByRole("link", { name: "src/notes.txt", exact: true }).waitFor();
    await until("the first read done", () => page.getByRole("button", { name: "Refresh" }).isEnabled());
    assert.equal(reads.length, 1);
    writeFileSync(join(repo, "pulled.txt"), "x\n");

    // A finger on the list, as a phone's touch screen sends it.
    const touch = await page.context().newCDPSession(page);
    const box = await files.boundingBox();
    const x = Math.round(box.x + box.width / 2);
    const y0 = Math.round(box.y + 40);
    const drag = async (pixels, release) => {
      await touch.send("Input.dispatchTouchEvent", { type: "touchStart", touchPoints: [{ x, y: y0 }] });
      for (let i = 1; i <= 10; i++) {
        await touch.send("Input.dispatchTouchEvent", { type: "touchMove", touchPoints: [{ x, y: y0 + Math.round((pixels * i) / 10) }] });
      }
      if (release) await touch.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
    };

    // Too short: the indicator shows, nothing is read when it is released.
    await drag(60, false);
    await page.getByText("Pull to refresh", { exact: true }).waitFor();
    await touch.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
    await page.getByText("Pull to refresh", { exact: true }).waitFor({ state: "detached" });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(reads.length, 1, "a short pull read the list");
    assert.equal(await files.getByRole("link", { name: "pulled.txt", exact: true }).count(), 0);

    // Far enough: "Release to refresh", and releasing reads the list.
    await drag(200, false);
    await page.getByText("Release to refresh", { exact: true }).waitFor();
    await screenshot(page, "changes-pull");
    await touch.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
    await files.getByRole("link", { name: "pulled.txt", exact: true }).waitFor();
    assert.equal(reads.length, 2);
    await touch.detach();
    rmSync(join(repo, "pulled.txt"));
    await page.close();
  });

  test("a cwd that is not a git repository says so", async () => {
    const { page } = await open(plain);
    await page.getByRole("tab", { name: "Changes" }).click();
    await page.getByRole("alert").filter({ hasText: "Not a git repository" }).waitFor();
    await page.close();
  });
});
