// The daemon's token in token mode (PROTOCOL.md 12.5 and docs/PROTOCOL.md
// "2.4.0: optional authentication"): read from a pairing link's fragment,
// kept per daemon (its origin) in localStorage, sent on every REST request
// (`Authorization: Bearer`) and every WebSocket URL (`token=`). A 401, or a
// socket closed with 1008 `token rotated`, asks for pairing again.

/** The storage key of this daemon's token; read when used, so the module
 * also loads where there is no page (unit tests). */
function key(): string {
  return `amarre.token:${location.origin}`;
}

/** The token given on this page, for when storage refuses it. */
let current: string | null = null;

export function token(): string | null {
  try {
    return localStorage.getItem(key());
  } catch {
    return null;
  }
}

export function storeToken(t: string) {
  try {
    localStorage.setItem(key(), t);
  } catch {
    // Storage refused (e.g. a private window's quota): the token still
    // works for this page through `current`.
  }
  current = t;
}

/** The token to send now (the stored one, or the one kept in memory). */
export function currentToken(): string | null {
  return token() ?? current;
}

/** The token in a fragment such as `token=<token>&x=y` (a leading `#` is allowed). */
function fromFragment(fragment: string): string | null {
  const f = fragment.startsWith("#") ? fragment.slice(1) : fragment;
  if (!/(^|&)token=/.test(f)) return null;
  const t = new URLSearchParams(f).get("token")?.trim();
  return t ? t : null;
}

/**
 * On load (and when the fragment changes): a `token` in the fragment is
 * stored and the fragment removed from the address bar, without a reload.
 * True when a token was taken.
 */
export function takeFragmentToken(): boolean {
  const t = fromFragment(location.hash);
  if (!t) return false;
  storeToken(t);
  history.replaceState(history.state, "", location.pathname + location.search);
  return true;
}

/**
 * What the "Pairing link" box holds: a link with the token in its fragment
 * (or, leniently, in its query), or the bare token. Null when it is neither.
 */
export function parsePairing(input: string): string | null {
  const text = input.trim();
  if (!text) return null;
  const hash = text.indexOf("#");
  if (hash >= 0) return fromFragment(text.slice(hash + 1));
  if (/^[A-Za-z0-9_-]{16,}$/.test(text)) return text;
  const q = text.indexOf("?");
  return q >= 0 ? fromFragment(text.slice(q + 1)) : null;
}

type Listener = () => void;
const listeners = new Set<Listener>();

/** Called on a 401 or a socket closed because the token was rotated. */
export function unauthorized() {
  for (const l of [...listeners]) l();
}

export function onUnauthorized(l: Listener): () => void {
  listeners.add(l);
  return () => listeners.delete(l);
}
