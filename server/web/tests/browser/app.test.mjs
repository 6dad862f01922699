// The web client in real Chromium against the real daemon (PROTOCOL.md
// section 12.1): controls are found by the accessible names of the contract.
import assert from "node:assert/strict";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  WAIT,
  fakeInstances,
  screenshot,
  startBrowser,
  startDaemon,
  startProxy,
  tempDir,
  until,
} from "./harness.mjs";

let daemon;
let browser;
let work;

before(async () => {
  work = tempDir("work");
  daemon = await startDaemon(
    fakeInstances([{ id: "missing", agent: "stdio", command: "/nonexistent-amarre/agent" }]),
  );
  browser = await startBrowser();
});

after(async () => {
  await browser?.stop();
  await daemon?.stop();
  if (work) rmSync(work, { recursive: true, force: true });
});

/** Starts a session over REST and opens its page. */
async function openSession(name, base = daemon.url) {
  const r = await daemon.api("POST", "/sessions", { instanceId: "fake", name, cwd: work });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const page = await browser.newPage();
  await page.goto(`${base}/app/#/s/${r.body.id}`);
  await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
  return { page, id: r.body.id };
}

async function send(page, text) {
  await page.getByRole("textbox", { name: "Message" }).fill(text);
  await page.getByRole("button", { name: "Send" }).click();
}

const log = (page) => page.getByRole("log", { name: "Conversation" });

describe("the web client", () => {
  test("a browser on / lands on the session list; a session starts from the form", async () => {
    const page = await browser.newPage();
    await page.goto(`${daemon.url}/`);
    assert.match(page.url(), /\/app\/$/);
    await page.getByRole("button", { name: "New session" }).click();
    const instance = page.getByRole("combobox", { name: "Instance" });
    const options = await instance.locator("option").allTextContents();
    assert.ok(options.some((o) => o.includes("fake") && !o.includes("unavailable")), options.join("|"));
    assert.ok(
      options.some((o) => o.includes("missing") && o.includes("unavailable") && o.includes("/nonexistent-amarre/agent")),
      options.join("|"),
    );
    await instance.selectOption("fake");
    await page.getByRole("textbox", { name: "Name" }).fill("from-the-form");
    await page.getByRole("textbox", { name: "Working directory" }).fill(work);
    await screenshot(page, "new-session");
    await page.getByRole("button", { name: "Start" }).click();
    await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
    await page.getByText("running", { exact: true }).first().waitFor();
    const sessions = (await daemon.api("GET", "/sessions")).body;
    const made = sessions.find((s) => s.name === "from-the-form");
    assert.ok(made, JSON.stringify(sessions));
    assert.equal(made.cwd, work);
    assert.match(page.url(), new RegExp(`#/s/${made.id}$`));
    // The list shows it with its status word.
    await page.goto(`${daemon.url}/app/`);
    const link = page.getByRole("link", { name: /from-the-form/ });
    await link.waitFor();
    await page.locator("li", { has: link }).getByText("running", { exact: true }).waitFor();
    await page.close();
  });

  test("a prompt's answer streams in", async () => {
    const { page } = await openSession("stream");
    await send(page, "SLOW 12");
    // Partial text first, then the whole of it.
    await until("partial text", async () => {
      const t = await log(page).innerText();
      return t.includes("w2") && !t.includes("w12");
    });
    await page.getByRole("button", { name: "Stop" }).waitFor();
    await until("the whole answer", async () => (await log(page).innerText()).includes("w12"));
    await page.getByRole("button", { name: "Stop" }).waitFor({ state: "detached" });
    await send(page, "hello **there**");
    await log(page).locator("strong", { hasText: "there" }).waitFor();
    await screenshot(page, "conversation");
    await page.close();
  });

  test("Allow runs the tool, Deny does not", async () => {
    const { page } = await openSession("tools");
    await send(page, "TOOL allowed.txt");
    await page.getByText("Run bash?").waitFor();
    await screenshot(page, "question");
    await page.getByRole("button", { name: "Allow" }).click();
    await log(page).getByText("Done.").waitFor();
    assert.ok(existsSync(join(work, "allowed.txt")), "the allowed tool ran");
    await log(page).locator(".diff").getByText("+made by the tool").waitFor();

    await send(page, "TOOL denied.txt");
    await page.getByRole("button", { name: "Deny" }).click();
    await log(page).getByText("Not run.").waitFor();
    assert.ok(!existsSync(join(work, "denied.txt")), "the denied tool did not run");
    await log(page).getByText("failed").waitFor();
    await page.close();
  });

  test("an answer in one page removes the card in the other; a late page sees a pending question", async () => {
    const { page: a, id } = await openSession("two-pages");
    const b = await browser.newPage();
    await b.goto(`${daemon.url}/app/#/s/${id}`);
    await b.getByRole("status").filter({ hasText: "Connected" }).waitFor();
    await send(a, "PICK");
    await a.getByRole("button", { name: "Green", exact: true }).waitFor();
    await b.getByRole("button", { name: "Green", exact: true }).waitFor();
    // A page opened now gets the pending question too.
    const late = await browser.newPage();
    await late.goto(`${daemon.url}/app/#/s/${id}`);
    await late.getByRole("button", { name: "Blue", exact: true }).waitFor();
    // The session list shows the waiting badge.
    const list = await browser.newPage();
    await list.goto(`${daemon.url}/app/`);
    await list.getByRole("link", { name: /two-pages.*1 waiting/ }).waitFor();
    await screenshot(list, "sessions");
    await list.close();
    await b.getByRole("button", { name: "Green", exact: true }).click();
    const gone = { state: "detached", timeout: 2000 };
    await a.getByRole("button", { name: "Green", exact: true }).waitFor(gone);
    await late.getByRole("button", { name: "Red", exact: true }).waitFor(gone);
    await a.getByText("You picked Green.").waitFor();
    // input: a textbox named by the title, Submit.
    await send(a, "NAME");
    await a.getByRole("textbox", { name: "Your name" }).fill("Ada");
    await a.getByRole("button", { name: "Submit" }).click();
    await b.getByText("Hello, Ada!").waitFor();
    for (const p of [a, b, late]) await p.close();
  });

  test("the plan card and a notify toast", async () => {
    const { page } = await openSession("plan");
    await send(page, "PLAN");
    const plan = page.getByRole("region", { name: "Plan" });
    await plan.getByRole("heading", { name: "Release plan" }).waitFor();
    await plan.locator("strong", { hasText: "tests" }).waitFor();
    await screenshot(page, "plan");
    await send(page, "NOTE build finished");
    await page.getByRole("alert").filter({ hasText: "build finished" }).waitFor();
    await page.close();
  });

  test("a crash is shown; Restart brings the session back", async () => {
    const { page } = await openSession("crashy");
    await send(page, "CRASH");
    await log(page).getByText("The agent exited: exit code 3").waitFor();
    await page.getByRole("status").filter({ hasText: "Offline" }).waitFor();
    await page.getByText("crashed", { exact: true }).first().waitFor();
    await screenshot(page, "crashed");
    await page.getByRole("button", { name: "Restart" }).click();
    await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
    await page.getByText("running", { exact: true }).first().waitFor();
    await send(page, "back again");
    await log(page).getByText("Echo: back again").waitFor();
    // Delete (the confirm dialog is accepted) goes back to the list.
    await page.getByRole("button", { name: "Delete" }).click();
    await until("the list", async () => /\/app\/#\/$/.test(page.url()));
    await page.close();
  });

  test("the network dropped and restored: nothing lost or doubled; an offline message is sent once", async () => {
    const proxy = await startProxy(daemon.port);
    try {
      const { page, id } = await openSession("flaky", proxy.url);
      await send(page, "SLOW 30");
      await until("some words", async () => (await log(page).innerText()).includes("w3 "));
      proxy.cut();
      await page.getByRole("status").filter({ hasText: /Reconnecting|Offline/ }).waitFor();
      await send(page, "typed offline");
      await log(page).getByText("waiting for the connection").waitFor();
      await screenshot(page, "offline");
      // Let the agent stream on while the page is cut off.
      await new Promise((r) => setTimeout(r, 1500));
      proxy.restore();
      await page.getByRole("status").filter({ hasText: "Connected" }).waitFor();
      await until("the whole stream and the offline message's answer", async () => {
        const t = await log(page).innerText();
        return t.includes("w30") && t.includes("Echo: typed offline");
      }, WAIT * 2);
      const text = await log(page).innerText();
      for (let i = 1; i <= 30; i++) {
        assert.equal((text.match(new RegExp(`\\bw${i}\\b`, "g")) ?? []).length, 1, `w${i} once in:\n${text}`);
      }
      assert.equal(text.split("typed offline").length - 1, 2, `the prompt once and its echo once:\n${text}`);
      assert.equal(await log(page).getByText("waiting for the connection").count(), 0);
      // The agent got the offline message exactly once.
      const other = await browser.newPage();
      await other.goto(`${daemon.url}/app/#/s/${id}`);
      await until("the other page's history", async () => (await log(other).innerText()).includes("Echo: typed offline"));
      assert.equal((await log(other).innerText()).split("Echo: typed offline").length - 1, 1);
      await other.close();
      await page.close();
    } finally {
      await proxy.stop();
    }
  });

  test("the cached shell opens and says Offline when the daemon cannot be reached", async () => {
    const proxy = await startProxy(daemon.port);
    try {
      const page = await browser.newPage();
      await page.goto(`${proxy.url}/app/`);
      await page.getByRole("button", { name: "New session" }).waitFor();
      // The service worker is active and controls the page.
      await page.evaluate(async () => {
        await navigator.serviceWorker.ready;
      });
      await until("a controlled page", async () => {
        await page.reload();
        return page.evaluate(() => navigator.serviceWorker.controller !== null);
      });
      proxy.cut();
      await page.reload();
      await page.getByText("Offline").first().waitFor();
      await page.getByRole("button", { name: "New session" }).waitFor();
      await page.close();
    } finally {
      await proxy.stop();
    }
  });

  test("phone-sized viewport: nothing overflows sideways", async () => {
    const { page } = await openSession("phone");
    await send(page, `A long line: ${"x".repeat(300)}\n\n\`\`\`\n${"code ".repeat(80)}\n\`\`\``);
    await until("the echo", async () => (await log(page).innerText()).includes("A long line"));
    const { scroll, width } = await page.evaluate(() => ({ scroll: document.documentElement.scrollWidth, width: window.innerWidth }));
    assert.ok(scroll <= width, `page is ${scroll}px wide in a ${width}px viewport`);
    for (const name of ["Message", "Send"]) {
      const role = name === "Message" ? "textbox" : "button";
      const box = await page.getByRole(role, { name }).boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= width, `${name} fits: ${JSON.stringify(box)}`);
    }
    await page.close();
  });
});
