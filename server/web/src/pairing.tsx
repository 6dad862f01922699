// The pairing screen (PROTOCOL.md 12.1 and 12.5): shown on a 401, it takes
// the link `amarre pair` prints (or the bare token) and stores the token.
import { useEffect, useRef, useState } from "preact/hooks";
import { currentToken, parsePairing, storeToken } from "./auth";

export function Pairing({ onPaired }: { onPaired: () => void }) {
  const [text, setText] = useState("");
  const [error, setError] = useState<string | null>(null);
  const had = useRef(currentToken() !== null);
  const inputRef = useRef<HTMLInputElement>(null);
  useEffect(() => inputRef.current?.focus(), []);

  const submit = (e: Event) => {
    e.preventDefault();
    const t = parsePairing(text);
    if (!t) {
      setError("This is neither a pairing link nor a token. Run `amarre pair` on the daemon's machine.");
      return;
    }
    storeToken(t);
    onPaired();
  };

  return (
    <div class="page">
      <header class="bar">
        <h1>amarre</h1>
      </header>
      <main>
        <form class="card pairing" onSubmit={submit} aria-label="Pairing">
          <h2>Pair this device</h2>
          <p class="muted">
            {had.current
              ? "The daemon did not accept this device's token (it may have been rotated). "
              : "This daemon asks for a token. "}
            Run <code>amarre pair</code> on its machine and open the link it prints (or scan its QR code), or paste the
            link or the token here.
          </p>
          <label for="pair-link">Pairing link</label>
          <input
            id="pair-link"
            ref={inputRef}
            value={text}
            onInput={(e) => setText((e.target as HTMLInputElement).value)}
            placeholder="http://…/app/#token=…"
            autocapitalize="off"
            autocomplete="off"
            spellcheck={false}
          />
          {error && (
            <p class="error" role="alert">
              {error}
            </p>
          )}
          <button type="submit" class="primary">
            Pair
          </button>
        </form>
      </main>
    </div>
  );
}
