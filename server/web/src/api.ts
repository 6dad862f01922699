// REST calls of the public protocol (PROTOCOL.md section 3 and 12.1).

import { currentToken, unauthorized } from "./auth";

export type Summary = {
  id: string;
  name: string | null;
  instanceId: string;
  status: "running" | "crashed" | "stopped";
  agent: string;
  spawnedAt: number;
  clients: number;
  cwd?: string | null;
  pendingQuestions?: number;
  exitCode?: number | null;
  signal?: string | null;
};

export type Instance = { id: string; agent: string };
export type AdapterEntry = { instance: string; name: string; available?: boolean; problem?: string | null };

/** A failed call: `status` 0 when the daemon could not be reached. */
export class ApiError extends Error {
  constructor(
    public status: number,
    public body: Record<string, unknown>,
  ) {
    super(describe(status, body));
  }
}

function describe(status: number, body: Record<string, unknown>): string {
  if (status === 0) return "The daemon cannot be reached.";
  const code = typeof body.error === "string" ? body.error : `HTTP ${status}`;
  const detail = typeof body.detail === "string" ? `: ${body.detail}` : "";
  return `${code}${detail}`;
}

function headers(json: boolean): Record<string, string> {
  const h: Record<string, string> = {};
  if (json) h["content-type"] = "application/json";
  const t = currentToken();
  if (t) h.authorization = `Bearer ${t}`;
  return h;
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  let resp: Response;
  try {
    resp = await fetch(path, {
      method,
      headers: headers(body !== undefined),
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, {});
  }
  if (resp.status === 401) unauthorized();
  if (resp.status === 204) return undefined as T;
  const text = await resp.text();
  let parsed: unknown = {};
  try {
    parsed = text ? JSON.parse(text) : {};
  } catch {
    parsed = { error: text.slice(0, 200) };
  }
  if (!resp.ok) throw new ApiError(resp.status, (parsed ?? {}) as Record<string, unknown>);
  return parsed as T;
}

export const api = {
  sessions: () => call<Summary[]>("GET", "/sessions"),
  session: (id: string) => call<Summary>("GET", `/sessions/${encodeURIComponent(id)}`),
  instances: () => call<Instance[]>("GET", "/instances"),
  adapters: () => call<AdapterEntry[]>("GET", "/adapters"),
  create: (body: { instanceId?: string; name?: string; cwd?: string }) => call<Summary>("POST", "/sessions", body),
  restart: (id: string) => call<Summary>("POST", `/sessions/${encodeURIComponent(id)}/restart`),
  remove: (id: string) => call<void>("DELETE", `/sessions/${encodeURIComponent(id)}`),
};

/** One file of `GET /sessions/{id}/changes` (PROTOCOL.md, 2.4.0: review). */
export type ChangedFile = {
  path: string;
  status: "modified" | "added" | "deleted" | "renamed" | "untracked";
  oldPath?: string;
  insertions: number;
  deletions: number;
  binary: boolean;
};
export type Changes = { cwd: string; repository: boolean; branch: string | null; head: string | null; files: ChangedFile[] };

/** A text route of the review (`/diff`, `/file`): the body and its type. */
async function text(path: string): Promise<{ body: string; binary: boolean }> {
  let resp: Response;
  try {
    resp = await fetch(path, { cache: "no-store" });
  } catch {
    throw new ApiError(0, {});
  }
  if (!resp.ok) {
    let parsed: Record<string, unknown> = {};
    try {
      parsed = await resp.json();
    } catch {
      parsed = {};
    }
    throw new ApiError(resp.status, parsed);
  }
  const type = resp.headers.get("content-type") ?? "";
  if (type.startsWith("application/octet-stream")) return { body: "", binary: true };
  return { body: await resp.text(), binary: false };
}

export const review = {
  changes: (id: string) => call<Changes>("GET", `/sessions/${encodeURIComponent(id)}/changes`),
  diff: (id: string, path: string) => text(`/sessions/${encodeURIComponent(id)}/diff?path=${encodeURIComponent(path)}`),
  file: (id: string, path: string) => text(`/sessions/${encodeURIComponent(id)}/file?path=${encodeURIComponent(path)}`),
};
