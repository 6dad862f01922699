// The conversation of one session as the page shows it, built from the
// records of the session's stream (pi dialect, AGENTS.md section 1, plus the
// server's `amarre.*` records, PROTOCOL.md sections 6, 11 and 12). Pure: a
// record in, a new view out; no I/O, so it is tested with recorded streams.

export type Rec = Record<string, unknown> & { type?: string; _seq?: number };

export type Block = { kind: "text" | "thinking"; text: string };

export type Item =
  | { kind: "user"; key: string; text: string; local?: "queued" | "sent" }
  | {
      kind: "assistant";
      key: string;
      blocks: Block[];
      streaming: boolean;
      error?: string;
      /** Which block each content index streams into. */
      slots?: Record<number, number>;
    }
  | {
      kind: "tool";
      key: string;
      id: string;
      name: string;
      args: unknown;
      output: string;
      diff?: string;
      state: "running" | "done" | "error";
    }
  | { kind: "event"; key: string; text: string; level: "info" | "error" }
  | { kind: "plan"; key: string; markdown: string };

export type Question = {
  id: string;
  method: "confirm" | "select" | "input" | "editor";
  title: string;
  message?: string;
  options?: string[];
  placeholder?: string;
  prefill?: string;
};

export type Toast = { key: string; text: string; level: string };

export type View = {
  items: Item[];
  questions: Question[];
  toasts: Toast[];
  running: boolean;
  /** The last `_seq` taken in (records at or below it are duplicates). */
  lastSeq: number;
  /** Set by `amarre.replay_gap`: history must be reloaded (get_messages). */
  needsHistory: boolean;
  nextKey: number;
};

export const emptyView = (): View => ({
  items: [],
  questions: [],
  toasts: [],
  running: false,
  lastSeq: 0,
  needsHistory: false,
  nextKey: 1,
});

const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const obj = (v: unknown): Record<string, unknown> | undefined =>
  v !== null && typeof v === "object" && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;

/** Text of a pi content value (a string, or an array of content blocks). */
export function contentText(content: unknown): string {
  if (typeof content === "string") return content;
  if (!Array.isArray(content)) return "";
  return content
    .map((c) => {
      const b = obj(c);
      if (!b) return "";
      if (b.type === "text") return str(b.text) ?? "";
      if (b.type === "image") return "[image]";
      return "";
    })
    .join("");
}

function key(v: View, prefix: string): string {
  const k = `${prefix}${v.nextKey}`;
  v.nextKey += 1;
  return k;
}

function lastAssistant(v: View): Extract<Item, { kind: "assistant" }> | undefined {
  for (let i = v.items.length - 1; i >= 0; i--) {
    const it = v.items[i];
    if (it.kind === "assistant") return it.streaming ? it : undefined;
    // A prompt typed here while the answer streams does not end the answer.
    if (it.kind === "user" && it.local === undefined) return undefined;
  }
  return undefined;
}

function blocksOf(content: unknown): Block[] {
  if (!Array.isArray(content)) return [];
  const out: Block[] = [];
  for (const c of content) {
    const b = obj(c);
    if (b?.type === "text" && str(b.text)) out.push({ kind: "text", text: b.text as string });
    if (b?.type === "thinking" && str(b.thinking)) out.push({ kind: "thinking", text: b.thinking as string });
  }
  return out;
}

function findTool(v: View, id: string) {
  for (let i = v.items.length - 1; i >= 0; i--) {
    const it = v.items[i];
    if (it.kind === "tool" && it.id === id) return it;
  }
  return undefined;
}

function diffOf(result: unknown): string | undefined {
  const details = obj(obj(result)?.details);
  const diff = str(details?.diff) ?? str(details?.patch);
  return diff && diff.length > 0 ? diff : undefined;
}

/** Adds a user prompt; a prompt this page sent (shown already) is not shown twice. */
function addUser(v: View, text: string) {
  const mine = v.items.find((it) => it.kind === "user" && it.local !== undefined && it.text === text);
  if (mine && mine.kind === "user") {
    mine.local = undefined;
    return;
  }
  v.items.push({ kind: "user", key: key(v, "u"), text });
}

function addMessage(v: View, m: Record<string, unknown>) {
  const role = m.role;
  if (role === "user") {
    addUser(v, contentText(m.content));
  } else if (role === "assistant") {
    const blocks = blocksOf(m.content);
    const error = m.stopReason === "error" ? (str(m.errorMessage) ?? "the model answered with an error") : undefined;
    v.items.push({ kind: "assistant", key: key(v, "a"), blocks, streaming: false, error });
    for (const c of Array.isArray(m.content) ? m.content : []) {
      const b = obj(c);
      if (b?.type === "toolCall" && str(b.id) && !findTool(v, b.id as string)) {
        v.items.push({
          kind: "tool",
          key: key(v, "t"),
          id: b.id as string,
          name: str(b.name) ?? "tool",
          args: b.arguments,
          output: "",
          state: "running",
        });
      }
    }
  } else if (role === "toolResult") {
    const id = str(m.toolCallId) ?? "";
    let t = findTool(v, id);
    if (!t) {
      t = { kind: "tool", key: key(v, "t"), id, name: str(m.toolName) ?? "tool", args: undefined, output: "", state: "running" };
      v.items.push(t);
    }
    t.output = contentText(m.content);
    t.diff = diffOf(m) ?? t.diff;
    t.state = m.isError === true ? "error" : "done";
  }
}

function question(r: Rec): Question | undefined {
  const method = r.method;
  if (method !== "confirm" && method !== "select" && method !== "input" && method !== "editor") return undefined;
  const id = str(r.id);
  if (!id) return undefined;
  return {
    id,
    method,
    title: str(r.title) ?? "The agent asks",
    message: str(r.message),
    options: Array.isArray(r.options) ? r.options.map((o) => (typeof o === "string" ? o : JSON.stringify(o))) : undefined,
    placeholder: str(r.placeholder),
    prefill: str(r.prefill),
  };
}

/** Takes in one record; returns the new view (the old one is not changed). */
export function reduce(prev: View, r: Rec): View {
  if (typeof r._seq === "number") {
    // Records already taken in (a replay seam or a resent question).
    if (r._seq <= prev.lastSeq && r.type !== "extension_ui_request") return prev;
  }
  const v: View = { ...prev, items: prev.items.slice(), questions: prev.questions.slice(), toasts: prev.toasts.slice() };
  // Items that change are copied before changing them.
  const own = <T extends Item>(it: T): T => {
    const i = v.items.indexOf(it);
    const copy = { ...it, blocks: "blocks" in it ? (it.blocks as Block[]).map((b) => ({ ...b })) : undefined } as T;
    if (!("blocks" in it)) delete (copy as Record<string, unknown>).blocks;
    v.items[i] = copy;
    return copy;
  };
  if (typeof r._seq === "number" && r._seq > v.lastSeq) v.lastSeq = r._seq;
  switch (r.type) {
    case "amarre.hello":
      break;
    case "amarre.replay_gap":
      v.needsHistory = true;
      break;
    case "amarre.question_resolved":
      v.questions = v.questions.filter((q) => q.id !== r.id);
      break;
    case "amarre.session_event": {
      if (r.event === "crashed") {
        const how =
          r.reason === "adapter_trap"
            ? `its adapter failed (${str(r.detail) ?? "trap"})`
            : r.signal
              ? `signal ${String(r.signal)}`
              : `exit code ${String(r.exitCode ?? "unknown")}`;
        v.items.push({ kind: "event", key: key(v, "e"), text: `The agent exited: ${how}.`, level: "error" });
        v.running = false;
        v.questions = [];
        for (const it of v.items) if (it.kind === "assistant" && it.streaming) own(it).streaming = false;
      } else if (r.event === "resumed") {
        // The daemon restarted (durable sessions, PROTOCOL.md 12.3): a turn
        // that was running is gone; the agent waits for the next prompt.
        const how = r.resumed === true ? "the conversation continues" : "the agent started fresh";
        const lost = r.interrupted === true ? " The turn that was running was lost." : "";
        v.items.push({ kind: "event", key: key(v, "e"), text: `The daemon restarted; ${how}.${lost}`, level: "info" });
        v.running = false;
        for (const it of v.items) if (it.kind === "assistant" && it.streaming) own(it).streaming = false;
      }
      break;
    }
    case "amarre.record_dropped":
      v.items.push({ kind: "event", key: key(v, "e"), text: `A record was dropped (${str(r.reason) ?? "limit"}).`, level: "error" });
      break;
    case "agent_start":
      v.running = true;
      break;
    case "agent_end":
      v.running = false;
      for (const it of v.items) {
        if (it.kind === "assistant" && it.streaming) own(it).streaming = false;
        if (it.kind === "tool" && it.state === "running") own(it).state = "error";
      }
      break;
    case "message_start": {
      const m = obj(r.message);
      if (m?.role === "assistant") {
        v.items.push({ kind: "assistant", key: key(v, "a"), blocks: [], streaming: true });
      } else if (m?.role === "user") {
        addUser(v, contentText(m.content));
      }
      break;
    }
    case "message_update": {
      const e = obj(r.assistantMessageEvent);
      let a = lastAssistant(v);
      if (e?.type === "error") {
        const error = str(e.error) ?? str(obj(e.error)?.errorMessage) ?? str(e.reason) ?? "the model answered with an error";
        if (a) {
          const c = own(a);
          c.error = error;
          c.streaming = false;
        } else {
          v.items.push({ kind: "assistant", key: key(v, "a"), blocks: [], streaming: false, error });
        }
        break;
      }
      if (!e || !a) break;
      a = own(a);
      const idx = typeof e.contentIndex === "number" ? e.contentIndex : 0;
      const kind = e.type === "thinking_delta" || e.type === "thinking_start" ? "thinking" : "text";
      if (e.type === "text_delta" || e.type === "thinking_delta") {
        const delta = str(e.delta) ?? "";
        // One block per content index of that kind, in order.
        const slot = a.slots ?? {};
        let bi = slot[idx];
        if (bi === undefined || a.blocks[bi]?.kind !== kind) {
          a.blocks.push({ kind, text: "" });
          bi = a.blocks.length - 1;
          a.slots = { ...slot, [idx]: bi };
        }
        a.blocks[bi] = { kind, text: a.blocks[bi].text + delta };
      }
      break;
    }
    case "message_end": {
      const m = obj(r.message);
      if (m?.role === "assistant") {
        const a = lastAssistant(v);
        const blocks = blocksOf(m.content);
        const error = m.stopReason === "error" ? (str(m.errorMessage) ?? "the model answered with an error") : undefined;
        if (a) {
          const c = own(a);
          if (blocks.length > 0 || c.blocks.length === 0) c.blocks = blocks;
          c.streaming = false;
          c.error = error ?? c.error;
        } else {
          addMessage(v, m);
        }
      }
      break;
    }
    case "tool_execution_start": {
      const id = str(r.toolCallId) ?? "";
      const t = findTool(v, id);
      if (t) {
        const c = own(t);
        c.args = r.args ?? c.args;
        c.state = "running";
      } else {
        v.items.push({ kind: "tool", key: key(v, "t"), id, name: str(r.toolName) ?? "tool", args: r.args, output: "", state: "running" });
      }
      break;
    }
    case "tool_execution_update": {
      const t = findTool(v, str(r.toolCallId) ?? "");
      if (t) own(t).output = contentText(obj(r.partialResult)?.content);
      break;
    }
    case "tool_execution_end": {
      const id = str(r.toolCallId) ?? "";
      let t = findTool(v, id);
      if (!t) {
        t = { kind: "tool", key: key(v, "t"), id, name: str(r.toolName) ?? "tool", args: undefined, output: "", state: "running" };
        v.items.push(t);
      }
      const c = own(t);
      const result = obj(r.result);
      c.output = contentText(result?.content) || c.output;
      c.diff = diffOf(result) ?? c.diff;
      c.state = r.isError === true ? "error" : "done";
      break;
    }
    case "extension_ui_request": {
      const q = question(r);
      if (q) {
        if (!v.questions.some((x) => x.id === q.id)) v.questions.push(q);
      } else if (r.method === "notify") {
        if (r.event === "plan_capture") {
          v.items.push({ kind: "plan", key: key(v, "p"), markdown: str(r.message) ?? "" });
        } else {
          v.toasts.push({ key: key(v, "n"), text: str(r.message) ?? "", level: str(r.notifyType) ?? "info" });
        }
      }
      break;
    }
    case "extension_error":
      v.items.push({ kind: "event", key: key(v, "e"), text: `Extension error: ${str(r.error) ?? "unknown"}`, level: "error" });
      break;
    case "response": {
      if (r.success === false) {
        v.items.push({ kind: "event", key: key(v, "e"), text: `${str(r.command) ?? "command"} failed: ${str(r.error) ?? "unknown error"}`, level: "error" });
      } else if (r.command === "get_messages") {
        const data = obj(r.data);
        if (Array.isArray(data?.messages)) return history(v, data.messages);
      }
      break;
    }
    case "auto_retry_start":
      v.items.push({ kind: "event", key: key(v, "e"), text: `Retrying: ${str(r.errorMessage) ?? ""}`, level: "info" });
      break;
    default:
      break;
  }
  return v;
}

/** Rebuilds the conversation from `get_messages` (after a replay gap). */
export function history(prev: View, messages: unknown[]): View {
  const v: View = { ...prev, items: [], needsHistory: false };
  const queued = prev.items.filter((it) => it.kind === "user" && it.local === "queued");
  for (const m of messages) {
    const o = obj(m);
    if (o) addMessage(v, o);
  }
  // Tools of a finished history are done unless their result is missing.
  v.items.push(...queued);
  return v;
}

/** A prompt typed on this page: shown at once, marked until the agent echoes it. */
export function localPrompt(prev: View, text: string, sent: boolean): View {
  const v: View = { ...prev, items: prev.items.slice() };
  v.items.push({ kind: "user", key: key(v, "l"), text, local: sent ? "sent" : "queued" });
  return v;
}

/** Marks the queued local prompts as sent (after the outbox was flushed). */
export function markSent(prev: View): View {
  if (!prev.items.some((it) => it.kind === "user" && it.local === "queued")) return prev;
  return {
    ...prev,
    items: prev.items.map((it) => (it.kind === "user" && it.local === "queued" ? { ...it, local: "sent" } : it)),
  };
}

export function dropQuestion(prev: View, id: string): View {
  return { ...prev, questions: prev.questions.filter((q) => q.id !== id) };
}

export function dropToast(prev: View, k: string): View {
  return { ...prev, toasts: prev.toasts.filter((t) => t.key !== k) };
}
