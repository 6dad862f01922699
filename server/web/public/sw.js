// Caches the app's shell so the page opens (and says "Offline") when the
// daemon cannot be reached. Only /app/ files are cached; the protocol's
// REST and WebSocket traffic always goes to the network.
const CACHE = "amarre-shell-v1";

async function cacheShell() {
  const cache = await caches.open(CACHE);
  const resp = await fetch("/app/", { cache: "no-store" });
  if (!resp.ok) return;
  const html = await resp.clone().text();
  await cache.put("/app/", resp);
  const assets = [...html.matchAll(/(?:src|href)="(\/app\/[^"]+)"/g)].map((m) => m[1]);
  await Promise.all(
    assets.map((url) =>
      fetch(url).then((r) => (r.ok ? cache.put(url, r) : undefined)).catch(() => undefined),
    ),
  );
}

self.addEventListener("install", (event) => {
  event.waitUntil(cacheShell().catch(() => undefined).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin || !url.pathname.startsWith("/app/")) return;
  if (url.pathname.startsWith("/app/assets/")) {
    // Hashed names never change: the cache first.
    event.respondWith(
      caches.match(event.request).then(
        (hit) =>
          hit ||
          fetch(event.request).then((resp) => {
            if (resp.ok) {
              const copy = resp.clone();
              caches.open(CACHE).then((c) => c.put(event.request, copy));
            }
            return resp;
          }),
      ),
    );
    return;
  }
  // The page and other files: the network first, the cache when offline.
  const key = event.request.mode === "navigate" ? "/app/" : event.request;
  event.respondWith(
    fetch(event.request)
      .then((resp) => {
        if (resp.ok) {
          const copy = resp.clone();
          caches.open(CACHE).then((c) => c.put(key, copy));
        }
        return resp;
      })
      .catch(() => caches.match(key).then((hit) => hit || Response.error())),
  );
});
