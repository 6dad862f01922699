// The "Changes" view of a session (PROTOCOL.md, 2.4.0: review): the files
// that differ from HEAD, the diff of one, the whole file, and a comment on a
// diff line that goes back to the agent as a prompt. Everything the daemon
// sends is shown as text (never parsed as HTML).
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, type ChangedFile, type Changes, review } from "./api";
import { type Pull, pullArmed, usePullToRefresh } from "./pull";

export type DiffLine = { text: string; kind: "add" | "del" | "hunk" | "meta" | "ctx"; line: number | null };

/** Splits a unified diff into lines with the line number a comment names:
 * the new side's, or the old side's for a deleted line. */
export function parseDiff(diff: string): DiffLine[] {
  const out: DiffLine[] = [];
  let oldNo = 0;
  let newNo = 0;
  let inHunk = false;
  const lines = diff.split("\n");
  if (lines.length > 0 && lines[lines.length - 1] === "") lines.pop();
  for (const text of lines) {
    const h = /^@@ -(\d+)(?:,\d+)? \+(\d+)(?:,\d+)? @@/.exec(text);
    if (h) {
      oldNo = Number(h[1]);
      newNo = Number(h[2]);
      inHunk = true;
      out.push({ text, kind: "hunk", line: null });
    } else if (!inHunk || text.startsWith("diff --git ")) {
      inHunk = false;
      out.push({ text, kind: "meta", line: null });
    } else if (text.startsWith("+")) {
      out.push({ text, kind: "add", line: newNo++ });
    } else if (text.startsWith("-")) {
      out.push({ text, kind: "del", line: oldNo++ });
    } else if (text.startsWith("\\")) {
      out.push({ text, kind: "meta", line: null });
    } else {
      out.push({ text, kind: "ctx", line: newNo++ });
      oldNo++;
    }
  }
  return out;
}

/** What the view says when a review route fails, and whether trying
 * again can help (a cwd that is not a repository stays one). */
export function reviewError(e: unknown): { text: string; retry: boolean } {
  if (e instanceof ApiError) {
    if (e.status === 422 && e.body.error === "not_a_repository") return { text: "Not a git repository", retry: false };
    if (e.status === 504) {
      return {
        text: "The repository is too large to read within the daemon's time limit (504). Ignore large generated folders in .gitignore, or raise limits.review_timeout_ms, then retry.",
        retry: true,
      };
    }
  }
  return { text: (e as Error).message, retry: true };
}

/** The pull-to-refresh indicator above a view (visual only: the "Refresh"
 * button does the same for a keyboard or a screen reader). */
function PullIndicator({ pull }: { pull: Pull | null }) {
  if (!pull || pull.distance === 0) return null;
  return (
    <div class="pull-indicator" aria-hidden="true" style={{ height: `${pull.distance}px` }}>
      {pullArmed(pull) ? "Release to refresh" : "Pull to refresh"}
    </div>
  );
}

export function ChangesView({
  id,
  epoch,
  onComment,
}: {
  id: string;
  /** Bumped when a turn ends (`agent_end`): the list is read again. */
  epoch: number;
  onComment: (text: string) => void;
}) {
  const [changes, setChanges] = useState<Changes | null>(null);
  const [error, setError] = useState<{ text: string; retry: boolean } | null>(null);
  const [loading, setLoading] = useState(false);
  const [open, setOpen] = useState<ChangedFile | null>(null);
  const [manual, setManual] = useState(0);
  const view = useRef<HTMLElement>(null);
  const refresh = () => setManual((m) => m + 1);
  const pull = usePullToRefresh(view, refresh, loading);

  useEffect(() => {
    let live = true;
    setLoading(true);
    // The list stays while it is read again; an error goes (it comes back
    // if the new answer fails too).
    setError(null);
    review
      .changes(id)
      .then((c) => {
        if (!live) return;
        setChanges(c);
        setError(null);
      })
      .catch((e) => {
        if (!live) return;
        setChanges(null);
        setError(reviewError(e));
      })
      .finally(() => live && setLoading(false));
    return () => {
      live = false;
    };
  }, [id, epoch, manual]);

  if (open) return <FileView id={id} file={open} back={() => setOpen(null)} onComment={onComment} epoch={epoch} />;

  return (
    <section class="changes" aria-label="Changed files" ref={view}>
      <PullIndicator pull={pull} />
      <div class="row changes-head">
        <span class="muted">
          {changes
            ? `${changes.files.length} changed${changes.branch ? ` · ${changes.branch}` : ""}${loading ? " · refreshing…" : ""}`
            : loading
              ? "Loading…"
              : ""}
        </span>
        <button type="button" onClick={refresh} disabled={loading}>
          Refresh
        </button>
      </div>
      {error && (
        <p class="banner error" role="alert">
          {error.text}
          {error.retry && (
            <>
              {" "}
              <button type="button" onClick={refresh}>
                Retry
              </button>
            </>
          )}
        </p>
      )}
      {changes && changes.files.length === 0 && <p class="muted">No changes against HEAD.</p>}
      {changes && changes.files.length > 0 && (
        <ul class="file-list">
          {changes.files.map((f) => (
            <li key={f.path}>
              <a
                href={`#/s/${encodeURIComponent(id)}`}
                aria-label={f.path}
                onClick={(e) => {
                  e.preventDefault();
                  setOpen(f);
                }}
              >
                <span class="file-path">{f.oldPath ? `${f.oldPath} → ${f.path}` : f.path}</span>
              </a>
              <span class={`file-status ${f.status}`}>{f.status}</span>
              {f.binary ? (
                <span class="muted">binary</span>
              ) : (
                <span class="counts">
                  <span class="ins">+{f.insertions}</span> <span class="dels">−{f.deletions}</span>
                </span>
              )}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}

function FileView({
  id,
  file,
  back,
  onComment,
  epoch,
}: {
  id: string;
  file: ChangedFile;
  back: () => void;
  onComment: (text: string) => void;
  epoch: number;
}) {
  const [mode, setMode] = useState<"diff" | "full">("diff");
  const [body, setBody] = useState<{ body: string; binary: boolean } | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [selected, setSelected] = useState<number | null>(null);
  const [again, setAgain] = useState(0);
  const view = useRef<HTMLElement>(null);
  const pull = usePullToRefresh(view, () => setAgain((a) => a + 1), body === null && error === null);

  useEffect(() => {
    let live = true;
    setBody(null);
    setError(null);
    setSelected(null);
    (mode === "diff" ? review.diff(id, file.path) : review.file(id, file.path))
      .then((b) => live && setBody(b))
      .catch((e) => live && setError(reviewError(e).text));
    return () => {
      live = false;
    };
  }, [id, file.path, mode, epoch, again]);

  const lines = body && mode === "diff" ? parseDiff(body.body) : [];
  const sel = selected === null ? null : lines[selected];

  return (
    <section class="changes file-view" aria-label={file.path} ref={view}>
      <PullIndicator pull={pull} />
      <div class="row changes-head">
        <button type="button" onClick={back}>
          ‹ Files
        </button>
        <span class="file-path">{file.path}</span>
        <button type="button" aria-pressed={mode === "full"} onClick={() => setMode(mode === "diff" ? "full" : "diff")}>
          {mode === "diff" ? "Full file" : "Diff"}
        </button>
      </div>
      {error && (
        <p class="banner error" role="alert">
          {error}{" "}
          <button type="button" onClick={() => setAgain((a) => a + 1)}>
            Retry
          </button>
        </p>
      )}
      {!body && !error && <p class="muted">Loading…</p>}
      {body && mode === "full" && (body.binary ? <p class="muted">binary file</p> : <pre class="full-file">{body.body}</pre>)}
      {body && mode === "diff" && body.binary && <p class="muted">binary file</p>}
      {body && mode === "diff" && !body.binary && lines.length === 0 && <p class="muted">No changes.</p>}
      {body && mode === "diff" && !body.binary && lines.length > 0 && (
        <div class="diff review-diff">
          {lines.map((l, i) =>
            l.line === null ? (
              <div key={i} class={l.kind}>
                {l.text}
              </div>
            ) : (
              <button
                type="button"
                key={i}
                class={`diff-line ${l.kind}${selected === i ? " selected" : ""}`}
                aria-pressed={selected === i}
                onClick={() => setSelected(selected === i ? null : i)}
              >
                {l.text}
              </button>
            ),
          )}
        </div>
      )}
      {sel && sel.line !== null && (
        <div class="comment-bar">
          <span class="muted">
            {file.path}:{sel.line}
          </span>
          <button
            type="button"
            class="primary"
            onClick={() => onComment(`${file.path}:${sel.line}\n> ${sel.text}\n\n`)}
          >
            Comment
          </button>
        </div>
      )}
    </section>
  );
}
