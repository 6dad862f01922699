#!/usr/bin/env node
// Records the raw Agent Client Protocol traffic of a real ACP agent running
// offline against the project's fake LLM (tests/src/fake_llm.rs, binary
// `fake-llm`). It acts as a minimal ACP client on the agent's stdio and logs
// every line in both directions, one JSON object per line:
//   {"dir":"to_agent"|"from_agent","line":"<the raw JSON-RPC line>"}
//
//   node record-acp.mjs <agent> <scenario> <fake LLM url> <out.jsonl>
//
// agents: qwen, codex, claude. Scenarios: handshake, text, tool-diff, allow,
// deny, abort, abort-next (abort, then one more prompt), abort-pending, plan, error, handshake-bad-version,
// handshake-bad-cwd, handshake-missing-cwd, handshake-no-auth. Agent
// requests other than session/request_permission get the JSON-RPC error
// -32601 (that is how qwen's craft/drainMidTurnQueue shows up).
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, mkdirSync, createWriteStream, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { createInterface } from "node:readline";

const here = dirname(fileURLToPath(import.meta.url));
const bin = (name) => join(process.env.AGENTS_NODE_MODULES || join(here, "node_modules"), ".bin", name);
const [agentName, scenario, llmUrl, outPath] = process.argv.slice(2);
if (!agentName || !scenario || !llmUrl || !outPath) {
  console.error("usage: record-acp.mjs <qwen|codex|claude> <scenario> <fake LLM url> <out.jsonl>");
  process.exit(2);
}
const STEP_MS = Number(process.env.RECORD_STEP_MS || 90000);

const scratch = mkdtempSync(join(tmpdir(), `acp-${agentName}-`));
const home = join(scratch, "home");
const cwd = join(scratch, "work");
mkdirSync(home, { recursive: true });
mkdirSync(cwd, { recursive: true });

function agentCommand() {
  const env = { ...process.env, HOME: home };
  if (scenario === "handshake-no-auth") {
    // No credentials and no provider: the agent has to ask for authentication.
    for (const k of Object.keys(env)) if (/API_KEY|BASE_URL/.test(k)) delete env[k];
    if (agentName === "qwen") return { cmd: bin("qwen"), args: ["--acp"], env };
    if (agentName === "codex") {
      const codexHome = join(scratch, "codex-home");
      mkdirSync(codexHome, { recursive: true });
      return { cmd: bin("codex-acp"), args: [], env: { ...env, CODEX_HOME: codexHome } };
    }
    return { cmd: bin("claude-agent-acp"), args: [], env: { ...env, IS_SANDBOX: "1" } };
  }
  if (agentName === "qwen") {
    // todo_write (the source of ACP `plan` updates) is off by default.
    mkdirSync(join(home, ".qwen"), { recursive: true });
    writeFileSync(join(home, ".qwen/settings.json"), JSON.stringify({ tools: { todoWrite: { enabled: true } } }));
    return {
      cmd: bin("qwen"),
      args: ["--acp", "--auth-type", "openai", "--openai-base-url", `${llmUrl}/v1`,
        "--openai-api-key", "dummy", "-m", "fake-model", "--approval-mode", "default"],
      env,
    };
  }
  if (agentName === "codex") {
    const codexHome = join(scratch, "codex-home");
    mkdirSync(codexHome, { recursive: true });
    writeFileSync(join(codexHome, "config.toml"), [
      'model = "fake-model"',
      'model_provider = "fake"',
      'approval_policy = "untrusted"',
      'sandbox_mode = "danger-full-access"',
      "",
      "[model_providers.fake]",
      'name = "fake"',
      `base_url = "${llmUrl}/v1"`,
      'wire_api = "responses"',
      'env_key = "FAKE_KEY"',
      "",
    ].join("\n"));
    return { cmd: bin("codex-acp"), args: [], env: { ...env, CODEX_HOME: codexHome, FAKE_KEY: "dummy" } };
  }
  if (agentName === "claude") {
    return {
      cmd: bin("claude-agent-acp"),
      args: [],
      env: {
        ...env, ANTHROPIC_BASE_URL: llmUrl, ANTHROPIC_API_KEY: "dummy", IS_SANDBOX: "1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: "1", DISABLE_AUTOUPDATER: "1",
        DISABLE_TELEMETRY: "1", DISABLE_ERROR_REPORTING: "1",
      },
    };
  }
  throw new Error(`unknown agent ${agentName}`);
}

const out = createWriteStream(outPath);
const log = (dir, line) => out.write(JSON.stringify({ dir, line }) + "\n");
const { cmd, args, env } = agentCommand();
const child = spawn(cmd, args, { cwd, env, stdio: ["pipe", "pipe", "pipe"], detached: true });
const stderr = createWriteStream(outPath.replace(/\.jsonl$/, "") + ".stderr.log");
child.stderr.pipe(stderr);
let exited = null;
child.on("exit", (code, signal) => { exited = { code, signal }; wake(); });

let nextId = 0;
const pending = new Map();
const received = [];
let waiters = [];
function wake() { for (const w of waiters) w(); waiters = []; }

function send(obj) {
  const line = JSON.stringify(obj);
  log("to_agent", line);
  if (!child.stdin.destroyed) child.stdin.write(line + "\n");
}
function request(method, params) {
  const id = nextId++;
  send({ jsonrpc: "2.0", id, method, params });
  return new Promise((resolve) => pending.set(id, resolve));
}
function notify(method, params) { send({ jsonrpc: "2.0", method, params }); }
async function until(what, pred, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const hit = received.find(pred);
    if (hit) return hit;
    if (exited) throw new Error(`agent exited (${JSON.stringify(exited)}) while waiting for ${what}`);
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => { waiters.push(r); setTimeout(r, Math.min(left, 500)); });
  }
}
async function response(what, promise, ms = STEP_MS) {
  let timer;
  const t = new Promise((_, rej) => { timer = setTimeout(() => rej(new Error(`timed out waiting for ${what}`)), ms); });
  const ex = new Promise((_, rej) => child.on("exit", () => rej(new Error(`agent exited while waiting for ${what}`))));
  try { return await Promise.race([promise, t, ex]); } finally { clearTimeout(timer); }
}

// How the client answers permission questions: "allow", "deny", "hold" (keep
// it pending until the scenario answers it).
let permissionPolicy = "allow";
const heldPermissions = [];
function pick(options, kinds) {
  for (const k of kinds) {
    const o = options.find((o) => o.kind === k);
    if (o) return o.optionId;
  }
  return options[0]?.optionId;
}
function answerPermission(msg, policy) {
  const options = msg.params?.options || [];
  if (policy === "cancelled") {
    send({ jsonrpc: "2.0", id: msg.id, result: { outcome: { outcome: "cancelled" } } });
    return;
  }
  const optionId = policy === "allow"
    ? pick(options, ["allow_once", "allow_always"])
    : pick(options, ["reject_once", "reject_always"]);
  send({ jsonrpc: "2.0", id: msg.id, result: { outcome: { outcome: "selected", optionId } } });
}

createInterface({ input: child.stdout }).on("line", (line) => {
  log("from_agent", line);
  let msg;
  try { msg = JSON.parse(line); } catch { return; }
  received.push(msg);
  if (msg.id !== undefined && msg.method === undefined) {
    const done = pending.get(msg.id);
    if (done) { pending.delete(msg.id); done(msg); }
  } else if (msg.id !== undefined && msg.method) {
    if (msg.method === "session/request_permission") {
      if (permissionPolicy === "hold") heldPermissions.push(msg);
      else answerPermission(msg, permissionPolicy);
    } else {
      send({ jsonrpc: "2.0", id: msg.id, error: { code: -32601, message: `Method not found: ${msg.method}` } });
    }
  }
  wake();
});

const clientInfo = { name: "amarre", title: "amarre", version: "0.0.0" };
const initParams = (version = 1) => ({
  protocolVersion: version,
  clientCapabilities: { fs: { readTextFile: false, writeTextFile: false }, terminal: false },
  clientInfo,
});

async function handshake() {
  const init = await response("initialize", request("initialize", initParams()));
  if (init.error) throw new Error(`initialize failed: ${JSON.stringify(init.error)}`);
  const s = await response("session/new", request("session/new", { cwd, mcpServers: [] }));
  if (s.error) throw new Error(`session/new failed: ${JSON.stringify(s.error)}`);
  return s.result.sessionId;
}
const text = (t) => [{ type: "text", text: t }];
const isUpdate = (kind) => (m) => m.method === "session/update" && m.params?.update?.sessionUpdate === kind;

async function prompt(sessionId, t) {
  const r = await response("the prompt's answer", request("session/prompt", { sessionId, prompt: text(t) }));
  return r;
}

async function run() {
  switch (scenario) {
    case "handshake":
      await handshake();
      break;
    case "text": {
      const sid = await handshake();
      await prompt(sid, "THINK about it, then say hello");
      break;
    }
    case "tool-diff": {
      const sid = await handshake();
      await prompt(sid, `WRITE: ${join(cwd, "notes.txt")} :: new line from the model`);
      break;
    }
    case "allow": {
      const sid = await handshake();
      await prompt(sid, "RUN: touch allowed.txt");
      if (!existsSync(join(cwd, "allowed.txt"))) throw new Error("allowed.txt was not created");
      break;
    }
    case "deny": {
      permissionPolicy = "deny";
      const sid = await handshake();
      await prompt(sid, "RUN: touch denied.txt");
      if (existsSync(join(cwd, "denied.txt"))) throw new Error("denied.txt was created");
      break;
    }
    case "abort":
    case "abort-next": {
      const sid = await handshake();
      // Claude runs a bare `sleep` without asking; a write makes it ask.
      const command = agentName === "claude" ? "touch started.txt && sleep 30" : "sleep 30";
      const answer = request("session/prompt", { sessionId: sid, prompt: text(`RUN: ${command}`) });
      // Once the tool runs (its permission answered), give it a moment, then cancel.
      await until("the permission request", (m) => m.method === "session/request_permission");
      await new Promise((r) => setTimeout(r, 3000));
      notify("session/cancel", { sessionId: sid });
      const started = Date.now();
      const r = await response("the cancelled prompt's answer", answer, 30000);
      console.error(`cancelled after ${Date.now() - started} ms: ${JSON.stringify(r.result ?? r.error)}`);
      if (scenario === "abort-next") {
        await prompt(sid, "after the abort");
        await prompt(sid, "and once more");
      }
      break;
    }
    case "abort-pending": {
      // Cancel while a permission question is still open: the client answers it `cancelled`.
      permissionPolicy = "hold";
      const sid = await handshake();
      const answer = request("session/prompt", { sessionId: sid, prompt: text("RUN: touch never.txt") });
      await until("the permission request", (m) => m.method === "session/request_permission");
      notify("session/cancel", { sessionId: sid });
      for (const p of heldPermissions.splice(0)) answerPermission(p, "cancelled");
      await response("the cancelled prompt's answer", answer, 30000);
      break;
    }
    case "plan": {
      // Claude's plan updates come from TodoWrite (the fake's `TODO:`).
      const sid = await handshake();
      await prompt(sid, `${agentName === "claude" ? "TODO" : "PLAN"}: 1. read the code 2. write the test`);
      break;
    }
    case "plan-mode": {
      // In plan mode Claude proposes its plan with ExitPlanMode, asking permission.
      permissionPolicy = "deny";
      const sid = await handshake();
      await response("session/set_mode", request("session/set_mode", { sessionId: sid, modeId: "plan" }));
      await prompt(sid, "PLAN: 1. read the code 2. write the test");
      break;
    }
    case "error": {
      const sid = await handshake();
      await prompt(sid, "FAIL: the fake model is overloaded");
      break;
    }
    case "handshake-bad-version": {
      const init = await response("initialize", request("initialize", initParams("one")));
      if (!init.error) await response("session/new", request("session/new", { cwd, mcpServers: [] }), 30000);
      break;
    }
    case "handshake-bad-cwd": {
      await response("initialize", request("initialize", initParams()));
      await response("session/new", request("session/new", { cwd: "relative/dir", mcpServers: [] }), 30000);
      break;
    }
    case "handshake-missing-cwd": {
      await response("initialize", request("initialize", initParams()));
      await response("session/new", request("session/new", { cwd: "/nonexistent/amarre-acp-missing", mcpServers: [] }), 30000);
      break;
    }
    case "handshake-no-auth": {
      // Started without the fake provider's credentials (see agentCommand).
      await response("initialize", request("initialize", initParams()));
      await response("session/new", request("session/new", { cwd, mcpServers: [] }), 30000);
      break;
    }
    default:
      throw new Error(`unknown scenario ${scenario}`);
  }
}

let failed = false;
try {
  await run();
  // Let trailing notifications arrive.
  await new Promise((r) => setTimeout(r, 1000));
} catch (e) {
  failed = true;
  console.error(`record-acp ${agentName} ${scenario}: ${e.message}`);
}
child.stdin.end();
await new Promise((r) => setTimeout(r, 500));
try { process.kill(-child.pid, "SIGTERM"); } catch {}
await new Promise((r) => setTimeout(r, 500));
try { process.kill(-child.pid, "SIGKILL"); } catch {}
out.end();
process.exitCode = failed ? 1 : 0;
