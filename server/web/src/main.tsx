import { render } from "preact";
import { App } from "./app";
import { takeFragmentToken } from "./auth";
import "./style.css";

// A pairing link (`/app/#token=…`): keep the token, clear the address bar.
takeFragmentToken();

const root = document.getElementById("root");
if (root) render(<App />, root);

// The shell is cached by the service worker, so the page opens (and says
// "Offline") when the daemon cannot be reached.
if ("serviceWorker" in navigator && location.protocol !== "file:") {
  navigator.serviceWorker.register("/app/sw.js", { scope: "/app/" }).catch(() => {
    // Not fatal: the app works without it (e.g. plain http on a LAN name).
  });
}
