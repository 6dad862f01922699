// Pairing the web client with a daemon in token mode (PROTOCOL.md 12.5 and
// the "pairing" row of 12.1): the real daemon with AMARRE_AUTH=token, its
// token file in a temporary state directory, real Chromium.
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { WAIT, daemonBinary, fakeInstances, screenshot, startBrowser, startDaemon, tempDir, until } from "./harness.mjs";

const run = promisify(execFile);

let daemon;
let state;
let work;

before(async () => {
  state = tempDir("state");
  work = tempDir("work");
  daemon = await startDaemon(fakeInstances(), { AMARRE_AUTH: "token", AMARRE_STATE_DIR: state });
});

after(async () => {
  await daemon?.stop();
  for (const d of [state, work]) if (d) rmSync(d, { recursive: true, force: true });
});

const tokenFile = () => join(state, "token");
const readToken = () => readFileSync(tokenFile(), "utf8").trim();

/** A REST call with the token (or without, when `token` is null). */
async function authed(method, path, body, token = readToken()) {
  const r = await fetch(`${daemon.url}${path}`, {
    method,
    headers: token ? { authorization: `Bearer ${token}` } : {},
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  return { status: r.status, body: text ? JSON.parse(text) : null };
}

/** Runs `fn` with a fresh browser profile (nothing stored from another test). */
async function withBrowser(fn) {
  const browser = await startBrowser();
  try {
    return await fn(browser);
  } finally {
    await browser.stop();
  }
}

const pairingBox = (page) => page.getByRole("textbox", { name: "Pairing link" });
const pairButton = (page) => page.getByRole("button", { name: "Pair" });
const log = (page) => page.getByRole("log", { name: "Conversation" });

describe("pairing in token mode", () => {
  test("the daemon made a private token and refuses requests without it", async () => {
    const mode = statSync(tokenFile()).mode & 0o777;
    assert.equal(mode, 0o600, `token file mode ${mode.toString(8)}`);
    assert.match(readToken(), /^[A-Za-z0-9_-]{43}$/);
    assert.equal((await authed("GET", "/sessions", undefined, null)).status, 401);
    assert.equal((await authed("GET", "/sessions")).status, 200);
  });

  test("/app/ without a token shows the pairing screen", async () => {
    await withBrowser(async (browser) => {
      const page = await browser.newPage();
      await page.goto(`${daemon.url}/app/`);
      await pairingBox(page).waitFor();
      await pairButton(page).waitFor();
      assert.equal(await page.getByRole("button", { name: "New session" }).count(), 0);
      await screenshot(page, "pairing");
    });
  });

  test("a pairing link pairs: the token leaves the address bar, REST and the socket work", async () => {
    const token = readToken();
    await withBrowser(async (browser) => {
      const page = await browser.newPage();
      await page.goto(`${daemon.url}/app/#token=${token}`);
      await page.getByRole("button", { name: "New session" }).waitFor();
      await page.getByText("No sessions yet", { exact: false }).waitFor();
      assert.equal(page.url(), `${daemon.url}/app/`);
      assert.ok(!page.url().includes(token));
      assert.equal(await pairingBox(page).count(), 0);

      // A session from the form, and a conversation over the socket (?token=).
      await page.getByRole("button", { name: "New session" }).click();
      await page.getByRole("combobox", { name: "Instance" }).selectOption("fake");
      await page.getByRole("textbox", { name: "Name" }).fill("paired");
      await page.getByRole("textbox", { name: "Working directory" }).fill(work);
      await page.getByRole("button", { name: "Start" }).click();
      await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
      await page.getByRole("textbox", { name: "Message" }).fill("hello from a paired phone");
      await page.getByRole("button", { name: "Send" }).click();
      await until("the echo", async () => (await log(page).innerText()).includes("Echo: hello from a paired phone"));
      const sessions = (await authed("GET", "/sessions")).body;
      assert.ok(
        sessions.some((s) => s.name === "paired"),
        JSON.stringify(sessions),
      );

      // The token was stored: the app opens paired without the fragment.
      await page.goto(`${daemon.url}/app/`);
      await page.getByRole("link", { name: /paired/ }).waitFor();
      assert.equal(await pairingBox(page).count(), 0);
    });
  });

  test("a pasted link pairs; a wrong token keeps the pairing screen", async () => {
    const r = await authed("POST", "/sessions", { instanceId: "fake", name: "pasted", cwd: work });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    await withBrowser(async (browser) => {
      const page = await browser.newPage();
      await page.goto(`${daemon.url}/app/`);
      // Not a link or token at all: said so, nothing stored.
      await pairingBox(page).fill("hello");
      await pairButton(page).click();
      await page.getByRole("alert").filter({ hasText: "neither a pairing link nor a token" }).waitFor();
      // A well-formed but wrong token: the daemon refuses it, the screen comes back.
      await pairingBox(page).fill("A".repeat(43));
      await pairButton(page).click();
      await page.getByText("did not accept", { exact: false }).waitFor();
      await pairingBox(page).waitFor();
      // The link `amarre pair` prints.
      await pairingBox(page).fill(`${daemon.url}/app/#token=${readToken()}`);
      await pairButton(page).click();
      await page.getByRole("link", { name: /pasted/ }).waitFor();
      assert.equal(await pairingBox(page).count(), 0);
    });
  });

  test("rotating the token sends an open page back to pairing; the new link pairs it", async () => {
    const r = await authed("POST", "/sessions", { instanceId: "fake", name: "rotated", cwd: work });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const old = readToken();
    await withBrowser(async (browser) => {
      const page = await browser.newPage();
      await page.goto(`${daemon.url}/app/#token=${old}`);
      await page.getByRole("link", { name: /rotated/ }).waitFor();
      await page.goto(`${daemon.url}/app/#/s/${r.body.id}`);
      await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();

      const env = { ...process.env, AMARRE_AUTH: "token", AMARRE_STATE_DIR: state };
      await run(daemonBinary(), ["token", "--rotate"], { env, timeout: WAIT });
      assert.notEqual(readToken(), old);
      // The socket is closed with 1008 `token rotated`: the pairing screen.
      await pairingBox(page).waitFor();

      const out = await run(daemonBinary(), ["pair", "--url", daemon.url], { env, timeout: WAIT });
      const link = /(http:\/\/\S+#token=\S+)/.exec(out.stdout)?.[1];
      assert.ok(link, out.stdout);
      assert.ok(link.includes(readToken()), link);
      await pairingBox(page).fill(link);
      await pairButton(page).click();
      await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
      await page.getByRole("textbox", { name: "Message" }).fill("after the rotation");
      await page.getByRole("button", { name: "Send" }).click();
      await until("the echo", async () => (await log(page).innerText()).includes("Echo: after the rotation"));
    });
  });
});
