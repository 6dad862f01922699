// One session's WebSocket (PROTOCOL.md sections 4, 11, 12.1): `hello=1`,
// `seq=1` and `since=<last _seq>` on every socket, reconnect with backoff
// after any drop and at once when the page becomes visible or the network
// comes back. Records typed while the socket is down wait in an outbox and
// are sent once, in order, after the next open.

import { api } from "./api";
import { currentToken, unauthorized } from "./auth";
import type { Rec } from "./reducer";

export type ConnState = "connecting" | "connected" | "reconnecting" | "offline" | "ended";

export type ConnEvents = {
  record: (r: Rec) => void;
  state: (s: ConnState, detail?: string) => void;
  /** The socket opened and the outbox was flushed (n records sent). */
  flushed: (n: number) => void;
  /** The session is not running any more (crashed, stopped or gone). */
  ended: (status: string) => void;
};

const MIN_BACKOFF = 500;
const MAX_BACKOFF = 10_000;

export class Connection {
  private ws: WebSocket | null = null;
  private outbox: string[] = [];
  private backoff = MIN_BACKOFF;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private closed = false;
  private opened = false;
  private lastSeq: () => number;
  private onVisible = () => {
    if (document.visibilityState === "visible") this.now();
  };
  private onOnline = () => this.now();
  private onOffline = () => {
    if (!this.isOpen()) this.ev.state("offline");
  };

  constructor(
    private id: string,
    lastSeq: () => number,
    private ev: ConnEvents,
  ) {
    this.lastSeq = lastSeq;
    document.addEventListener("visibilitychange", this.onVisible);
    window.addEventListener("online", this.onOnline);
    window.addEventListener("offline", this.onOffline);
    this.ev.state("connecting");
    this.open();
  }

  isOpen(): boolean {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Sends a record now, or keeps it for the next open. True when sent now. */
  send(record: Rec): boolean {
    const text = JSON.stringify(record);
    if (this.isOpen() && this.outbox.length === 0) {
      this.ws?.send(text);
      return true;
    }
    this.outbox.push(text);
    return false;
  }

  queued(): number {
    return this.outbox.length;
  }

  /** Reconnects at once (e.g. after a restart of the session). */
  now() {
    if (this.closed || this.isOpen()) return;
    if (this.ws && this.ws.readyState === WebSocket.CONNECTING) return;
    this.backoff = MIN_BACKOFF;
    this.schedule(0);
  }

  close() {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    document.removeEventListener("visibilitychange", this.onVisible);
    window.removeEventListener("online", this.onOnline);
    window.removeEventListener("offline", this.onOffline);
    this.ws?.close(1000);
    this.ws = null;
  }

  private url(): string {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const since = this.lastSeq();
    const t = currentToken();
    const auth = t ? `&token=${encodeURIComponent(t)}` : "";
    return `${scheme}://${location.host}/sessions/${encodeURIComponent(this.id)}?hello=1&seq=1&since=${since}${auth}`;
  }

  private schedule(delay: number) {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.timer = null;
      this.open();
    }, delay);
  }

  private open() {
    if (this.closed) return;
    let ws: WebSocket;
    try {
      ws = new WebSocket(this.url());
    } catch {
      this.dropped();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      if (this.ws !== ws) return;
      this.opened = true;
      this.backoff = MIN_BACKOFF;
      const pending = this.outbox;
      this.outbox = [];
      for (const text of pending) ws.send(text);
      this.ev.state("connected");
      this.ev.flushed(pending.length);
    };
    ws.onmessage = (m) => {
      if (this.ws !== ws || typeof m.data !== "string") return;
      for (const line of m.data.split("\n")) {
        if (!line.trim()) continue;
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch {
          continue;
        }
        if (rec && typeof rec === "object" && !Array.isArray(rec)) this.ev.record(rec as Rec);
      }
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      // The daemon's token changed: this page must be paired again.
      if (ev.code === 1008 && ev.reason === "token rotated") unauthorized();
      this.dropped();
    };
  }

  /** The socket ended: find out whether the session still runs, then retry or stop. */
  private async dropped() {
    if (this.closed) return;
    this.ev.state(navigator.onLine === false ? "offline" : this.opened ? "reconnecting" : "connecting");
    try {
      const s = await api.session(this.id);
      if (this.closed) return;
      if (s.status !== "running") {
        this.ev.state("ended", s.status);
        this.ev.ended(s.status);
        return;
      }
    } catch (e) {
      const status = (e as { status?: number }).status;
      if (status === 404) {
        this.ev.state("ended", "stopped");
        this.ev.ended("stopped");
        return;
      }
      if (status === 0) this.ev.state("offline");
    }
    if (this.closed) return;
    const jitter = Math.random() * 0.3 * this.backoff;
    this.schedule(this.backoff + jitter);
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
  }
}
