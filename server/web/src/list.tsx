// The session list and the form that starts a session.
import { useEffect, useRef, useState } from "preact/hooks";
import { type AdapterEntry, ApiError, api, type Instance, type Summary } from "./api";
import { go } from "./app";

export function age(ms: number, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m`;
  if (s < 86400) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

type Loaded = { sessions: Summary[]; instances: Instance[]; adapters: AdapterEntry[] };

export function SessionList() {
  const [data, setData] = useState<Loaded | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [offline, setOffline] = useState(false);
  const [showForm, setShowForm] = useState(false);

  const load = async () => {
    try {
      const [sessions, instances, adapters] = await Promise.all([
        api.sessions(),
        api.instances(),
        api.adapters().catch(() => [] as AdapterEntry[]),
      ]);
      setData({ sessions, instances, adapters });
      setOffline(false);
      setError(null);
    } catch (e) {
      if (e instanceof ApiError && e.status === 0) setOffline(true);
      else setError(String((e as Error).message));
    }
  };

  useEffect(() => {
    load();
    const t = setInterval(() => {
      if (document.visibilityState === "visible") load();
    }, 3000);
    const onVis = () => document.visibilityState === "visible" && load();
    document.addEventListener("visibilitychange", onVis);
    return () => {
      clearInterval(t);
      document.removeEventListener("visibilitychange", onVis);
    };
  }, []);

  return (
    <div class="page">
      <header class="bar">
        <h1>amarre</h1>
        <button type="button" class="primary" aria-expanded={showForm} onClick={() => setShowForm(!showForm)}>
          New session
        </button>
      </header>
      {offline && (
        <p class="banner offline">Offline: the daemon cannot be reached. Retrying…</p>
      )}
      {error && <p class="banner error">{error}</p>}
      {showForm && data && <NewSession instances={data.instances} adapters={data.adapters} />}
      <main>
        <h2 class="sr-only">Sessions</h2>
        {data === null && !offline && <p class="muted">Loading…</p>}
        {data && data.sessions.length === 0 && <p class="muted">No sessions yet. Start one with “New session”.</p>}
        <ul class="sessions">
          {data?.sessions
            .slice()
            .sort((a, b) => b.spawnedAt - a.spawnedAt)
            .map((s) => (
              <li key={s.id} class={`session ${s.status}`}>
                <a href={`#/s/${encodeURIComponent(s.id)}`}>
                  <span class="name">{s.name ?? s.id}</span>
                  {(s.pendingQuestions ?? 0) > 0 && (
                    <span class="badge" title="questions waiting for an answer">
                      {s.pendingQuestions} waiting
                    </span>
                  )}
                </a>
                <div class="meta">
                  <span class={`status-word ${s.status}`}>{s.status}</span>
                  <span>{s.instanceId}</span>
                  <span title={new Date(s.spawnedAt).toLocaleString()}>{age(s.spawnedAt)}</span>
                  {s.cwd && <span class="cwd">{s.cwd}</span>}
                </div>
              </li>
            ))}
        </ul>
      </main>
    </div>
  );
}

function NewSession({ instances, adapters }: { instances: Instance[]; adapters: AdapterEntry[] }) {
  const problem = (id: string) => adapters.find((a) => a.instance === id && a.available === false)?.problem ?? null;
  const firstAvailable = instances.find((i) => !problem(i.id))?.id ?? instances[0]?.id ?? "";
  const [instance, setInstance] = useState(firstAvailable);
  const [name, setName] = useState("");
  const [cwd, setCwd] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const nameRef = useRef<HTMLInputElement>(null);
  useEffect(() => nameRef.current?.focus(), []);
  const chosenProblem = problem(instance);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const s = await api.create({
        instanceId: instance || undefined,
        name: name.trim() || undefined,
        cwd: cwd.trim() || undefined,
      });
      go(`/s/${encodeURIComponent(s.id)}`);
    } catch (err) {
      setError((err as Error).message);
    } finally {
      setBusy(false);
    }
  };

  return (
    <form class="card new-session" onSubmit={submit} aria-label="New session">
      <label for="ns-instance">Instance</label>
      <select
        id="ns-instance"
        value={instance} onChange={(e) => setInstance((e.target as HTMLSelectElement).value)}
      >
        {instances.map((i) => {
          const p = problem(i.id);
          return (
            <option key={i.id} value={i.id}>
              {`${i.id} (${i.agent})${p ? `: unavailable, ${p}` : ""}`}
            </option>
          );
        })}
      </select>
      {chosenProblem && <p class="warn">This instance cannot start: {chosenProblem}</p>}
      <label for="ns-name">Name</label>
      <input id="ns-name" ref={nameRef} value={name} onInput={(e) => setName((e.target as HTMLInputElement).value)} placeholder="optional" />
      <label for="ns-cwd">Working directory</label>
      <input
        id="ns-cwd"
        value={cwd}
        onInput={(e) => setCwd((e.target as HTMLInputElement).value)}
        placeholder="/home/me/project (optional)"
        autocapitalize="off"
        spellcheck={false}
      />
      {error && (
        <p class="error" role="alert">
          {error}
        </p>
      )}
      <button type="submit" class="primary" disabled={busy}>
        Start
      </button>
    </form>
  );
}
