import preact from "@preact/preset-vite";
import { defineConfig } from "vite";

// The daemon to proxy to while developing (`npm run dev`): REST and the
// WebSocket go to it, so the page behaves exactly as when served by /app/.
const daemon = process.env.AMARRE_DAEMON ?? "http://127.0.0.1:8341";

export default defineConfig({
  base: "/app/",
  plugins: [preact()],
  build: {
    outDir: "dist",
    assetsDir: "assets",
    emptyOutDir: true,
    target: "es2020",
    // No inline script or style: the page's CSP forbids them.
    assetsInlineLimit: 0,
    modulePreload: { polyfill: false },
  },
  server: {
    proxy: {
      "/sessions": { target: daemon, ws: true, changeOrigin: true },
      "/instances": { target: daemon, changeOrigin: true },
      "/adapters": { target: daemon, changeOrigin: true },
      "/healthz": { target: daemon, changeOrigin: true },
    },
  },
  test: {
    include: ["tests/unit/**/*.test.ts"],
    environment: "node",
  },
});
