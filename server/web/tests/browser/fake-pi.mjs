#!/usr/bin/env node
// A small agent speaking pi's RPC dialect (AGENTS.md section 1) for the
// browser tests: JSON lines on stdin and stdout, like `pi --mode rpc`. The
// daemon runs it as a real process through the `stdio` adapter. What it does
// is decided by the prompt:
//
//   TOOL <name>   asks `confirm` before a tool that creates the file <name> in
//                 its working directory; runs it only when allowed
//   PICK          asks a `select` (options Red, Green, Blue) and says the choice
//   NAME          asks an `input` ("Your name") and greets the answer
//   PLAN          sends a `notify` with event plan_capture (a Markdown plan)
//   NOTE <text>   sends a plain `notify`
//   SLOW <n>      streams `w1 w2 ... wn` one word every 150 ms
//   CRASH         exits with code 3
//   anything else streams `Echo: <prompt>` in a few deltas
//
// `abort` ends the running turn; `get_messages` answers the history.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";

const out = (rec) => process.stdout.write(`${JSON.stringify(rec)}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const messages = [];
const waiting = new Map();
let aborted = false;
let running = false;
let n = 0;
const queue = [];

function ask(req) {
  const id = `q-${process.pid}-${++n}`;
  out({ type: "extension_ui_request", id, ...req });
  return new Promise((resolve) => waiting.set(id, resolve));
}

async function stream(text, words) {
  out({ type: "message_start", message: { role: "assistant", content: [] } });
  out({ type: "message_update", assistantMessageEvent: { type: "text_start", contentIndex: 0 } });
  let sent = "";
  for (const w of words) {
    if (aborted) break;
    sent += w;
    out({ type: "message_update", assistantMessageEvent: { type: "text_delta", contentIndex: 0, delta: w } });
    await sleep(text === "slow" ? 150 : 20);
  }
  const message = { role: "assistant", content: [{ type: "text", text: sent }], stopReason: aborted ? "aborted" : "stop" };
  out({ type: "message_end", message });
  messages.push(message);
}

async function tool(name, file) {
  const id = `call-${++n}`;
  const args = { command: `touch ${file}` };
  const call = { role: "assistant", content: [{ type: "toolCall", id, name, arguments: args }], stopReason: "toolUse" };
  out({ type: "message_start", message: { role: "assistant", content: [] } });
  out({ type: "message_end", message: call });
  messages.push(call);
  out({ type: "tool_execution_start", toolCallId: id, toolName: name, args });
  const answer = await ask({ method: "confirm", title: `Run ${name}?`, message: JSON.stringify(args) });
  let result;
  let isError;
  if (answer.confirmed === true) {
    writeFileSync(join(process.cwd(), file), "made by the tool\n");
    out({ type: "tool_execution_update", toolCallId: id, toolName: name, partialResult: { content: [{ type: "text", text: `created ${file}` }] } });
    result = { content: [{ type: "text", text: `created ${file}` }], details: { diff: `--- /dev/null\n+++ ${file}\n@@ -0,0 +1 @@\n+made by the tool` } };
    isError = false;
  } else {
    result = { content: [{ type: "text", text: "Blocked: the remote user denied it" }] };
    isError = true;
  }
  out({ type: "tool_execution_end", toolCallId: id, toolName: name, result, isError });
  messages.push({ role: "toolResult", toolCallId: id, toolName: name, content: result.content, isError });
  await stream("fast", [isError ? "Not run." : "Done."]);
}

async function turn(text) {
  running = true;
  aborted = false;
  out({ type: "agent_start" });
  out({ type: "turn_start" });
  const user = { role: "user", content: text };
  out({ type: "message_start", message: user });
  out({ type: "message_end", message: user });
  messages.push(user);
  const [word, ...rest] = text.split(" ");
  if (word === "TOOL") {
    await tool("bash", rest[0] || "made.txt");
  } else if (word === "PICK") {
    const a = await ask({ method: "select", title: "Pick a colour", options: ["Red", "Green", "Blue"] });
    await stream("fast", [a.cancelled ? "No colour." : `You picked ${a.value}.`]);
  } else if (word === "NAME") {
    const a = await ask({ method: "input", title: "Your name", placeholder: "name" });
    await stream("fast", [a.cancelled ? "No name." : `Hello, ${a.value}!`]);
  } else if (word === "PLAN") {
    out({
      type: "extension_ui_request",
      id: `plan-${++n}`,
      method: "notify",
      event: "plan_capture",
      message: "## Release plan\n\n1. Write the **tests**\n2. Ship it",
    });
    await stream("fast", ["Plan ready."]);
  } else if (word === "NOTE") {
    out({ type: "extension_ui_request", id: `note-${++n}`, method: "notify", message: rest.join(" "), notifyType: "info" });
    await stream("fast", ["Noted."]);
  } else if (word === "SLOW") {
    const count = Number(rest[0] || 10);
    const words = [];
    for (let i = 1; i <= count; i++) words.push(`w${i} `);
    await stream("slow", words);
  } else if (word === "CRASH") {
    process.exit(3);
  } else {
    await stream("fast", ["Echo", ": ", ...text.split(/(?<= )/)]);
  }
  out({ type: "turn_end" });
  out({ type: "agent_end", messages });
  running = false;
  const next = queue.shift();
  if (next) turn(next);
}

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let rec;
  try {
    rec = JSON.parse(line);
  } catch {
    return;
  }
  const reply = (extra = {}) => out({ type: "response", command: rec.type, success: true, ...(rec.id ? { id: rec.id } : {}), ...extra });
  switch (rec.type) {
    case "prompt":
      reply();
      if (running) queue.push(String(rec.message));
      else turn(String(rec.message));
      break;
    case "abort":
      aborted = true;
      for (const [id, resolve] of waiting) {
        waiting.delete(id);
        resolve({ cancelled: true });
      }
      reply();
      break;
    case "get_messages":
      reply({ data: { messages } });
      break;
    case "extension_ui_response": {
      const resolve = waiting.get(rec.id);
      if (resolve) {
        waiting.delete(rec.id);
        resolve(rec);
      }
      break;
    }
    default:
      out({ type: "response", command: rec.type, success: false, error: `unknown command ${rec.type}` });
  }
});
rl.on("close", () => process.exit(0));
