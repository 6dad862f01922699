// Browser-test harness: the real daemon binary on a free 127.0.0.1 port,
// a TCP proxy in front of it (to cut the network for real), and Debian's
// Chromium driven headless by playwright-core. Everything started here is
// bounded in time and stopped by the test that started it.
import { spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const ROOT = resolve(here, "..", "..", "..", "..");
const TARGET = process.env.CARGO_TARGET_DIR ? resolve(ROOT, process.env.CARGO_TARGET_DIR) : join(ROOT, "target");
export const FAKE_PI = join(here, "fake-pi.mjs");
export const SCREENSHOTS = join(TARGET, "screenshots");
export const CHROMIUM = process.env.AMARRE_CHROMIUM ?? "/usr/bin/chromium";
/** A phone's viewport (iPhone 12-15 class). */
export const PHONE = { width: 390, height: 844 };
/** Generous: the machine may be loaded. */
export const WAIT = 20_000;

export function daemonBinary() {
  const bin = process.env.AMARRE_BIN ?? join(TARGET, "debug", "amarre");
  if (!existsSync(bin)) throw new Error(`${bin} is missing: build it with 'cargo build -p amarre' (scripts/test does)`);
  return bin;
}

export function tempDir(tag) {
  return mkdtempSync(join(tmpdir(), `amarre-web-${tag}-`));
}

/** Starts `amarre serve` with these instances; resolves once it listens. */
export async function startDaemon(instances, extraEnv = {}) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith("AMARRE_") && k !== "PI_BIN" && k !== "CLAUDE_BIN") env[k] = v;
  }
  Object.assign(env, {
    AMARRE_PORT: "0",
    AMARRE_INSTANCES_JSON: JSON.stringify(instances),
    AMARRE_KILL_GRACE_MS: "1000",
    RUST_LOG: process.env.RUST_LOG ?? "warn",
    ...extraEnv,
  });
  const child = spawn(daemonBinary(), ["serve"], { env, stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  child.stderr.on("data", (d) => {
    log += d.toString();
    if (log.length > 200_000) log = log.slice(-100_000);
  });
  const url = await new Promise((resolveUrl, reject) => {
    const timer = setTimeout(() => reject(new Error(`the daemon did not start in time:\n${log}`)), WAIT);
    const rl = createInterface({ input: child.stdout });
    rl.once("line", (line) => {
      clearTimeout(timer);
      const m = /listening on (http:\/\/\S+)/.exec(line);
      if (m) resolveUrl(m[1]);
      else reject(new Error(`unexpected first line: ${line}\n${log}`));
    });
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`the daemon exited (${code}):\n${log}`));
    });
  });
  return {
    url,
    port: Number(new URL(url).port),
    log: () => log,
    async api(method, path, body) {
      const r = await fetch(`${url}${path}`, { method, body: body === undefined ? undefined : JSON.stringify(body) });
      const text = await r.text();
      return { status: r.status, body: text ? JSON.parse(text) : null };
    },
    async stop() {
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

/** One instance `fake` running the fake pi agent through the stdio adapter. */
export function fakeInstances(extra = []) {
  return [{ id: "fake", agent: "stdio", command: process.execPath, args: [FAKE_PI] }, ...extra];
}

/**
 * A TCP proxy on a free 127.0.0.1 port to `port`. `cut()` destroys every
 * open connection and refuses new ones (the network is down for real, open
 * WebSockets included); `restore()` accepts again.
 */
export async function startProxy(port) {
  const sockets = new Set();
  let down = false;
  const server = net.createServer((client) => {
    if (down) {
      client.destroy();
      return;
    }
    const upstream = net.connect(port, "127.0.0.1");
    sockets.add(client);
    sockets.add(upstream);
    const drop = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on("error", drop).on("close", drop);
    upstream.on("error", drop).on("close", drop);
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const proxyPort = server.address().port;
  return {
    url: `http://127.0.0.1:${proxyPort}`,
    cut() {
      down = true;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    restore() {
      down = false;
    },
    async stop() {
      down = true;
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Headless Chromium with a fresh profile. */
export async function startBrowser() {
  if (!existsSync(CHROMIUM)) {
    throw new Error(`${CHROMIUM} is missing: run scripts/setup-chromium (scripts/test does) or 'apt-get install -y chromium'`);
  }
  const profile = tempDir("profile");
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: PHONE,
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    timeout: WAIT,
  });
  context.setDefaultTimeout(WAIT);
  return {
    context,
    async newPage() {
      const page = await context.newPage();
      page.on("dialog", (d) => d.accept());
      return page;
    },
    async stop() {
      await context.close();
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

export async function screenshot(page, name) {
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`) });
}

/** Polls `fn` until it returns a truthy value; fails naming `what`. */
export async function until(what, fn, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}
