import { useEffect, useState } from "preact/hooks";
import { SessionList } from "./list";
import { SessionPage } from "./session";

/** `#/` is the session list, `#/s/<id>` a session. */
function route(): { page: "list" } | { page: "session"; id: string } {
  const m = /^#\/s\/([^/?#]+)/.exec(location.hash);
  return m ? { page: "session", id: decodeURIComponent(m[1]) } : { page: "list" };
}

export function App() {
  const [r, setR] = useState(route());
  useEffect(() => {
    const on = () => setR(route());
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return r.page === "session" ? <SessionPage key={r.id} id={r.id} /> : <SessionList />;
}

export function go(path: string) {
  location.hash = path;
}
