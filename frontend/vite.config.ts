// Builds the page into the Python package, which serves it (src/embedlens/app/static).
import { resolve } from "node:path";
import { defineConfig } from "vite";

export default defineConfig({
  root: import.meta.dirname,
  base: "/",
  build: {
    outDir: resolve(import.meta.dirname, "../src/embedlens/app/static"),
    emptyOutDir: true,
    assetsDir: "assets",
    target: "es2020",
    sourcemap: false,
    chunkSizeWarningLimit: 1024,
  },
  server: {
    // `npm run dev` with a running `embedlens app` on 5151: the API and media come from it.
    proxy: {
      "/api": "http://127.0.0.1:5151",
      "/media": "http://127.0.0.1:5151",
      "/ws": { target: "ws://127.0.0.1:5151", ws: true },
    },
  },
});
