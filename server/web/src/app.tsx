import { useEffect, useState } from "preact/hooks";
import { onUnauthorized, takeFragmentToken } from "./auth";
import { SessionList } from "./list";
import { Pairing } from "./pairing";
import { SessionPage } from "./session";

/** `#/` is the session list, `#/s/<id>` a session. */
function route(): { page: "list" } | { page: "session"; id: string } {
  const m = /^#\/s\/([^/?#]+)/.exec(location.hash);
  return m ? { page: "session", id: decodeURIComponent(m[1]) } : { page: "list" };
}

export function App() {
  const [r, setR] = useState(route());
  const [pairing, setPairing] = useState(false);
  // Bumped after pairing: the pages mount afresh and load everything again.
  const [epoch, setEpoch] = useState(0);
  useEffect(() => {
    const on = () => {
      // A pairing link opened in a tab that already shows the app.
      if (takeFragmentToken()) {
        setPairing(false);
        setEpoch((e) => e + 1);
      }
      setR(route());
    };
    window.addEventListener("hashchange", on);
    const off = onUnauthorized(() => setPairing(true));
    return () => {
      window.removeEventListener("hashchange", on);
      off();
    };
  }, []);
  if (pairing) {
    return (
      <Pairing
        onPaired={() => {
          setPairing(false);
          setEpoch((e) => e + 1);
          setR(route());
        }}
      />
    );
  }
  return r.page === "session" ? <SessionPage key={`${epoch}:${r.id}`} id={r.id} /> : <SessionList key={epoch} />;
}

export function go(path: string) {
  location.hash = path;
}
