/// <reference types="node" />
// The reducer fed with record streams recorded in the project's golden
// transcripts (adapters-wasm/*/transcripts/*.jsonl, docs/transcripts.md):
// what the claude-code adapter sends to clients is the pi dialect this page
// renders, so those `to_client` steps are real streams.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { emptyView, history, localPrompt, markSent, type Rec, reduce, type View } from "../../src/reducer";

const TRANSCRIPTS = join(__dirname, "..", "..", "..", "..", "adapters-wasm", "claude-code", "transcripts");

/** The records a client received in a transcript, numbered like `?seq=1` does. */
function stream(name: string): Rec[] {
  const out: Rec[] = [];
  for (const line of readFileSync(join(TRANSCRIPTS, name), "utf8").split("\n")) {
    if (!line.trim()) continue;
    const step = JSON.parse(line) as Record<string, unknown>;
    if (step.to_client && typeof step.to_client === "object") out.push({ ...(step.to_client as Rec), _seq: out.length + 1 });
  }
  if (out.length === 0) throw new Error(`no client records in ${name}`);
  return out;
}

const feed = (records: Rec[], v: View = emptyView()) => records.reduce(reduce, v);

describe("records to view", () => {
  it("streams text and keeps thinking apart", () => {
    const records = stream("text-and-thinking.jsonl");
    // Midway through the stream the text is partial and streaming.
    const cut = records.findIndex((r) => JSON.stringify(r).includes('"delta":"d: hell"'));
    const mid = feed(records.slice(0, cut + 1));
    const midA = mid.items.find((i) => i.kind === "assistant");
    expect(midA?.kind === "assistant" && midA.streaming).toBe(true);
    expect(midA?.kind === "assistant" && midA.blocks.find((b) => b.kind === "text")?.text).toBe("You said: hell");
    expect(mid.running).toBe(true);

    const v = feed(records);
    const a = v.items.filter((i) => i.kind === "assistant");
    expect(a.length).toBeGreaterThan(0);
    const first = a[0];
    if (first.kind !== "assistant") throw new Error("not assistant");
    expect(first.streaming).toBe(false);
    expect(first.blocks).toEqual([
      { kind: "thinking", text: "Let me think about this." },
      { kind: "text", text: "You said: hello THINK" },
    ]);
    expect(v.items[0]).toMatchObject({ kind: "user", text: "hello THINK" });
    expect(v.running).toBe(false);
  });

  it("shows an allowed tool call as a finished card after its question", () => {
    const records = stream("tool-allowed.jsonl");
    const asked = records.findIndex((r) => r.type === "extension_ui_request");
    const during = feed(records.slice(0, asked + 1));
    expect(during.questions).toEqual([
      expect.objectContaining({ method: "confirm", title: "Run Bash?" }),
    ]);
    const tool = during.items.find((i) => i.kind === "tool");
    expect(tool).toMatchObject({ name: "Bash", state: "running", args: { command: "touch made.txt" } });
    const v = feed(
      [{ type: "amarre.question_resolved", id: during.questions[0].id, reason: "answered", _seq: asked + 2 }],
      during,
    );
    expect(v.questions).toEqual([]);
    const end = feed(records.slice(asked + 1).map((r, i) => ({ ...r, _seq: asked + 3 + i })), v);
    expect(end.items.filter((i) => i.kind === "tool")).toEqual([
      expect.objectContaining({ name: "Bash", state: "done", output: "(Bash completed with no output)" }),
    ]);
    expect(end.items.at(-1)).toMatchObject({ kind: "assistant", blocks: [{ kind: "text", text: "Done: (Bash completed with no output)" }] });
  });

  it("marks a denied tool as failed", () => {
    const v = feed(stream("tool-denied.jsonl"));
    const tools = v.items.filter((i) => i.kind === "tool");
    expect(tools.length).toBeGreaterThan(0);
    expect(tools[0]).toMatchObject({ state: "error" });
  });

  it("renders a captured plan as a plan item", () => {
    const v = feed(stream("plan-capture.jsonl"));
    const plan = v.items.find((i) => i.kind === "plan");
    expect(plan).toBeDefined();
    expect(plan?.kind === "plan" && plan.markdown).toContain("do a thing");
  });

  it("shows model errors plainly", () => {
    const v = feed(stream("errors-and-exit.jsonl"));
    const errors = v.items.filter((i) => i.kind === "assistant" && i.error);
    expect(errors[0]).toMatchObject({ error: "API Error: 529 overloaded" });
  });

  it("ignores records already taken in (replay seam) and resolves questions by id", () => {
    const records = stream("tool-allowed.jsonl");
    const once = feed(records);
    const twice = feed(records, once);
    expect(twice.items).toEqual(once.items);
    expect(twice.lastSeq).toBe(records.length);
  });

  it("shows a prompt typed offline once, when the agent echoes it", () => {
    let v = localPrompt(emptyView(), "hello THINK", false);
    expect(v.items).toEqual([expect.objectContaining({ kind: "user", local: "queued" })]);
    v = markSent(v);
    v = feed(stream("text-and-thinking.jsonl"), v);
    expect(v.items.filter((i) => i.kind === "user")).toEqual([
      expect.objectContaining({ text: "hello THINK", local: undefined }),
    ]);
  });

  it("a prompt typed while the answer streams does not split the answer", () => {
    const records = stream("text-and-thinking.jsonl");
    const cut = records.findIndex((r) => JSON.stringify(r).includes('"delta":"d: hell"'));
    let v = feed(records.slice(0, cut + 1));
    v = localPrompt(v, "a follow-up", false);
    v = feed(records.slice(cut + 1), v);
    const answers = v.items.filter((i) => i.kind === "assistant");
    expect(answers.length).toBe(1);
    expect(answers[0]).toMatchObject({ blocks: [{ kind: "thinking" }, { kind: "text", text: "You said: hello THINK" }] });
  });

  it("crash events end streaming and drop questions", () => {
    const records = stream("tool-allowed.jsonl");
    const asked = records.findIndex((r) => r.type === "extension_ui_request");
    let v = feed(records.slice(0, asked + 1));
    v = reduce(v, { type: "amarre.session_event", event: "crashed", exitCode: 1, signal: null, _seq: 999 });
    expect(v.questions).toEqual([]);
    expect(v.running).toBe(false);
    expect(v.items.at(-1)).toMatchObject({ kind: "event", level: "error", text: expect.stringContaining("exit code 1") });
  });

  it("a daemon restart ends the running turn and says whether the conversation continues", () => {
    const records = stream("tool-allowed.jsonl");
    const started = records.findIndex((r) => r.type === "agent_start");
    let v = feed(records.slice(0, started + 1));
    expect(v.running).toBe(true);
    v = reduce(v, { type: "amarre.session_event", event: "resumed", resumed: true, interrupted: true, _seq: 999 });
    expect(v.running).toBe(false);
    expect(v.items.at(-1)).toMatchObject({ kind: "event", level: "info", text: expect.stringContaining("conversation continues") });
    expect(v.items.at(-1)).toMatchObject({ text: expect.stringContaining("was lost") });
  });

  it("a replay gap asks for history, which get_messages rebuilds", () => {
    let v = reduce(emptyView(), { type: "amarre.replay_gap", from: 1, to: 40 });
    expect(v.needsHistory).toBe(true);
    const end = stream("tool-allowed.jsonl").find((r) => r.type === "agent_end");
    const messages = (end as { messages: unknown[] }).messages;
    v = reduce(v, { type: "response", command: "get_messages", success: true, data: { messages }, _seq: 50 });
    expect(v.needsHistory).toBe(false);
    expect(v.items.map((i) => i.kind)).toEqual(["user", "assistant", "tool", "assistant"]);
    const again = history(v, messages);
    expect(again.items.length).toBe(v.items.length);
  });

  it("a notify is a toast, not a question", () => {
    const v = reduce(emptyView(), { type: "extension_ui_request", id: "n", method: "notify", message: "saved", _seq: 1 });
    expect(v.toasts).toEqual([expect.objectContaining({ text: "saved" })]);
    expect(v.questions).toEqual([]);
  });
});
