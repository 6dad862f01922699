// One session: its status and actions, the conversation, the questions and
// the compose box.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { api, type Summary } from "./api";
import { go } from "./app";
import { ChangesView } from "./changes";
import { type ConnState, Connection } from "./conn";
import { renderMarkdown } from "./markdown";
import {
  dropQuestion,
  dropToast,
  emptyView,
  type Item,
  localPrompt,
  markSent,
  type Question,
  type Rec,
  reduce,
  type View,
} from "./reducer";

const CONN_TEXT: Record<ConnState, string> = {
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  ended: "Offline",
};

let requestCounter = 0;
const requestId = (kind: string) => `web-${kind}-${Date.now().toString(36)}-${(requestCounter++).toString(36)}`;

export function SessionPage({ id }: { id: string }) {
  const [summary, setSummary] = useState<Summary | null>(null);
  const [missing, setMissing] = useState(false);
  const [view, setView] = useState<View>(emptyView);
  const viewRef = useRef(view);
  viewRef.current = view;
  const [conn, setConn] = useState<ConnState>("connecting");
  const [ended, setEnded] = useState<string | null>(null);
  const [actionError, setActionError] = useState<string | null>(null);
  const connRef = useRef<Connection | null>(null);
  const [epoch, setEpoch] = useState(0);
  const [tab, setTab] = useState<"conversation" | "changes">("conversation");
  const [turns, setTurns] = useState(0);
  const [draft, setDraft] = useState<{ text: string; n: number } | null>(null);

  const refresh = async () => {
    try {
      setSummary(await api.session(id));
      setMissing(false);
    } catch (e) {
      if ((e as { status?: number }).status === 404) setMissing(true);
    }
  };

  // The socket lives while the page shows the session (and is running).
  useEffect(() => {
    refresh();
    const apply = (r: Rec) => {
      if (r.type === "agent_end") setTurns((t) => t + 1);
      setView((v) => {
        const next = reduce(v, r);
        if (next.needsHistory && !v.needsHistory) {
          // Lost records: reload the conversation from the agent.
          connRef.current?.send({ type: "get_messages", id: requestId("history") });
        }
        if (r.type === "extension_ui_request" && next.questions.length > v.questions.length) notifyQuestion(next);
        return next;
      });
    };
    const c = new Connection(id, () => viewRef.current.lastSeq, {
      record: apply,
      state: (s, detail) => {
        setConn(s);
        if (s === "connected") setEnded(null);
        if (s === "ended") setEnded(detail ?? "stopped");
      },
      flushed: (n) => {
        if (n > 0) setView((v) => markSent(v));
      },
      ended: () => refresh(),
    });
    connRef.current = c;
    return () => {
      c.close();
      connRef.current = null;
    };
  }, [id, epoch]);

  const send = (record: Rec) => connRef.current?.send(record) ?? false;

  const prompt = (text: string) => {
    const running = viewRef.current.running;
    const record: Rec = { type: "prompt", id: requestId("prompt"), message: text };
    if (running) record.streamingBehavior = "followUp";
    const sent = send(record);
    setView((v) => localPrompt(v, text, sent));
  };

  const answer = (q: Question, reply: Record<string, unknown>) => {
    send({ type: "extension_ui_response", id: q.id, ...reply });
    setView((v) => dropQuestion(v, q.id));
  };

  const restart = async () => {
    setActionError(null);
    try {
      setSummary(await api.restart(id));
      setEnded(null);
      setEpoch((e) => e + 1);
    } catch (e) {
      setActionError((e as Error).message);
    }
  };

  const remove = async () => {
    if (!window.confirm("Delete this session? The agent is stopped.")) return;
    setActionError(null);
    try {
      await api.remove(id);
      go("/");
    } catch (e) {
      setActionError((e as Error).message);
    }
  };

  const status = ended ?? summary?.status ?? "…";
  const title = summary?.name ?? id;
  const connText = conn === "ended" ? `Offline: session ${ended ?? "stopped"}` : CONN_TEXT[conn];

  return (
    <div class="page session-page">
      <header class="bar">
        <a class="back" href="#/" aria-label="Sessions">
          ‹
        </a>
        <div class="title">
          <h1>{title}</h1>
          <div class="meta">
            <span class={`status-word ${status}`}>{status}</span>
            {summary?.cwd && <span class="cwd">{summary.cwd}</span>}
          </div>
        </div>
        <div class="actions">
          <button type="button" onClick={restart} disabled={status === "running"}>
            Restart
          </button>
          <button type="button" class="danger" onClick={remove}>
            Delete
          </button>
        </div>
      </header>
      <div class={`conn ${conn}`} role="status" aria-live="polite">
        {connText}
        {connRef.current && connRef.current.queued() > 0 ? ` · ${connRef.current.queued()} to send` : ""}
      </div>
      <NotifyOptIn />
      {missing && <p class="banner error">This session does not exist (any more).</p>}
      {actionError && (
        <p class="banner error" role="alert">
          {actionError}
        </p>
      )}
      <div class="tabs" role="tablist" aria-label="Views">
        <button type="button" role="tab" aria-selected={tab === "conversation"} onClick={() => setTab("conversation")}>
          Conversation
        </button>
        <button type="button" role="tab" aria-selected={tab === "changes"} onClick={() => setTab("changes")}>
          Changes
        </button>
      </div>
      {tab === "changes" ? (
        <ChangesView
          id={id}
          epoch={turns}
          onComment={(text) => {
            setDraft((d) => ({ text, n: (d?.n ?? 0) + 1 }));
            setTab("conversation");
          }}
        />
      ) : (
        <Conversation items={view.items} running={view.running} />
      )}
      <div class="questions">
        {view.questions.map((q) => (
          <QuestionCard key={q.id} q={q} answer={answer} />
        ))}
      </div>
      <Toasts toasts={view.toasts} dismiss={(k) => setView((v) => dropToast(v, k))} />
      <Compose draft={draft} running={view.running} onSend={prompt} onStop={() => send({ type: "abort", id: requestId("abort") })} />
    </div>
  );
}

function Conversation({ items, running }: { items: Item[]; running: boolean }) {
  const ref = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  useEffect(() => {
    const el = ref.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  });
  const onScroll = () => {
    const el = ref.current;
    if (el) stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
  };
  return (
    // biome-ignore lint/a11y/noNoninteractiveTabindex: the log scrolls with the keyboard
    <div class="log" role="log" aria-label="Conversation" ref={ref} onScroll={onScroll} tabIndex={0}>
      {items.length === 0 && <p class="muted">Nothing yet. Send a message to the agent.</p>}
      {items.map((it) => (
        <ItemView key={it.key} it={it} />
      ))}
      {running && <p class="working muted">working…</p>}
    </div>
  );
}

function Markdown({ text }: { text: string }) {
  const html = useMemo(() => renderMarkdown(text), [text]);
  return <div class="md" dangerouslySetInnerHTML={{ __html: html }} />;
}

function ItemView({ it }: { it: Item }) {
  switch (it.kind) {
    case "user":
      return (
        <div class="msg user">
          <div class="bubble">{it.text}</div>
          {it.local === "queued" && <div class="note">waiting for the connection</div>}
        </div>
      );
    case "assistant":
      return (
        <div class={`msg assistant${it.streaming ? " streaming" : ""}`}>
          {it.blocks.map((b, i) =>
            b.kind === "thinking" ? (
              <details key={i} class="thinking">
                <summary>Thinking</summary>
                <div class="thinking-text">{b.text}</div>
              </details>
            ) : (
              <Markdown key={i} text={b.text} />
            ),
          )}
          {it.error && <div class="error">Error: {it.error}</div>}
        </div>
      );
    case "tool":
      return <ToolCard it={it} />;
    case "event":
      return <div class={`event ${it.level}`}>{it.text}</div>;
    case "plan":
      return (
        <section class="plan card" aria-label="Plan">
          <h3>Plan</h3>
          <Markdown text={it.markdown} />
        </section>
      );
  }
}

function argsSummary(args: unknown): string {
  if (args && typeof args === "object") {
    const a = args as Record<string, unknown>;
    for (const k of ["command", "path", "file_path", "pattern", "url"]) if (typeof a[k] === "string") return a[k] as string;
  }
  if (args === undefined) return "";
  const s = JSON.stringify(args);
  return s.length > 120 ? `${s.slice(0, 120)}…` : s;
}

function ToolCard({ it }: { it: Extract<Item, { kind: "tool" }> }) {
  return (
    <div class={`tool card ${it.state}`}>
      <div class="tool-head">
        <span class="tool-name">{it.name}</span>
        <code class="tool-args">{argsSummary(it.args)}</code>
        <span class="tool-state">{it.state === "running" ? "running" : it.state === "error" ? "failed" : "done"}</span>
      </div>
      {it.diff && (
        <pre class="diff">
          {it.diff.split("\n").map((line, i) => (
            <span
              key={i}
              class={line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : line.startsWith("@@") ? "hunk" : ""}
            >
              {line}
              {"\n"}
            </span>
          ))}
        </pre>
      )}
      {(it.output || it.args !== undefined) && (
        <details class="tool-output" open={it.state === "error"}>
          <summary>Output</summary>
          {it.args !== undefined && <pre class="args">{JSON.stringify(it.args, null, 2)}</pre>}
          {it.output && <pre>{it.output}</pre>}
        </details>
      )}
    </div>
  );
}

function QuestionCard({ q, answer }: { q: Question; answer: (q: Question, reply: Record<string, unknown>) => void }) {
  const [text, setText] = useState(q.prefill ?? "");
  const titleId = `q-${q.id}-title`;
  return (
    <section class="question card" aria-labelledby={titleId}>
      <h3 id={titleId}>{q.title}</h3>
      {q.message && <pre class="q-message">{q.message}</pre>}
      {q.method === "confirm" && (
        <div class="row">
          <button type="button" class="primary" onClick={() => answer(q, { confirmed: true })}>
            Allow
          </button>
          <button type="button" class="danger" onClick={() => answer(q, { confirmed: false })}>
            Deny
          </button>
        </div>
      )}
      {q.method === "select" && (
        <div class="row wrap">
          {(q.options ?? []).map((o) => (
            <button type="button" key={o} onClick={() => answer(q, { value: o })}>
              {o}
            </button>
          ))}
        </div>
      )}
      {(q.method === "input" || q.method === "editor") && (
        <form
          class="col"
          onSubmit={(e) => {
            e.preventDefault();
            answer(q, { value: text });
          }}
        >
          {q.method === "input" ? (
            <input aria-label={q.title} value={text} placeholder={q.placeholder} onInput={(e) => setText((e.target as HTMLInputElement).value)} />
          ) : (
            <textarea aria-label={q.title} rows={6} value={text} onInput={(e) => setText((e.target as HTMLTextAreaElement).value)} />
          )}
          <div class="row">
            <button type="submit" class="primary">
              Submit
            </button>
            <button type="button" onClick={() => answer(q, { cancelled: true })}>
              Cancel
            </button>
          </div>
        </form>
      )}
    </section>
  );
}

function Toasts({ toasts, dismiss }: { toasts: View["toasts"]; dismiss: (k: string) => void }) {
  useEffect(() => {
    if (toasts.length === 0) return;
    const k = toasts[0].key;
    const t = setTimeout(() => dismiss(k), 6000);
    return () => clearTimeout(t);
  }, [toasts, dismiss]);
  return (
    <div class="toasts">
      {toasts.map((t) => (
        <div key={t.key} class={`toast ${t.level}`} role="alert">
          <span>{t.text}</span>
          <button type="button" aria-label="Dismiss" onClick={() => dismiss(t.key)}>
            ×
          </button>
        </div>
      ))}
    </div>
  );
}

function Compose({
  draft,
  running,
  onSend,
  onStop,
}: {
  draft: { text: string; n: number } | null;
  running: boolean;
  onSend: (t: string) => void;
  onStop: () => void;
}) {
  const [text, setText] = useState("");
  const box = useRef<HTMLTextAreaElement>(null);
  // A comment from the Changes view: the box is filled and focused.
  useEffect(() => {
    if (!draft) return;
    setText(draft.text);
    const el = box.current;
    if (el) {
      el.focus();
      el.setSelectionRange(draft.text.length, draft.text.length);
    }
  }, [draft]);
  const submit = (e?: Event) => {
    e?.preventDefault();
    const t = text.trim();
    if (!t) return;
    onSend(t);
    setText("");
  };
  return (
    <form class="compose" onSubmit={submit}>
      <textarea
        ref={box}
        aria-label="Message"
        rows={2}
        value={text}
        placeholder={running ? "Queue a follow-up…" : "Message the agent"}
        onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
        onKeyDown={(e) => {
          if (e.key === "Enter" && !e.shiftKey && !e.isComposing) submit(e);
        }}
      />
      <div class="compose-buttons">
        <button type="submit" class="primary">
          Send
        </button>
        {running && (
          <button type="button" class="danger" onClick={onStop}>
            Stop
          </button>
        )}
      </div>
    </form>
  );
}

// ----- browser notifications (opt-in) -------------------------------------

function notifyQuestion(v: View) {
  if (document.visibilityState !== "hidden") return;
  if (!("Notification" in window) || Notification.permission !== "granted") return;
  if (localStorage.getItem("amarre.notify") !== "1") return;
  const q = v.questions[v.questions.length - 1];
  try {
    new Notification("amarre · awaiting input", { body: q?.title ?? "A question waits", tag: q?.id });
  } catch {
    // Some browsers allow notifications from a service worker only.
  }
}

function NotifyOptIn() {
  const supported = typeof window !== "undefined" && "Notification" in window;
  const [on, setOn] = useState(supported && Notification.permission === "granted" && localStorage.getItem("amarre.notify") === "1");
  if (!supported || Notification.permission === "denied") return null;
  const toggle = async () => {
    if (on) {
      localStorage.removeItem("amarre.notify");
      setOn(false);
      return;
    }
    const p = await Notification.requestPermission();
    if (p === "granted") {
      localStorage.setItem("amarre.notify", "1");
      setOn(true);
    }
  };
  return (
    <button type="button" class="link notify-toggle" aria-pressed={on} onClick={toggle}>
      {on ? "Notifications on" : "Notify me of questions"}
    </button>
  );
}
