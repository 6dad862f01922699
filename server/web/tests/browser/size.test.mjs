// The first load's budget (issue 16, docs/PERFORMANCE.md): the JavaScript
// and CSS the page loads, gzipped, stay at or under 150 KB.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const dist = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "dist");
const BUDGET = 150 * 1024;

test("first load: JS + CSS gzipped within 150 KB", () => {
  const html = readFileSync(join(dist, "index.html"), "utf8");
  const files = [...html.matchAll(/(?:src|href)="\/app\/(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);
  assert.ok(files.length >= 2, `the page names its script and style: ${html}`);
  let total = 0;
  for (const f of files) {
    const size = gzipSync(readFileSync(join(dist, f)), { level: 9 }).length;
    console.log(`${f}: ${size} bytes gzipped`);
    total += size;
  }
  console.log(`first load: ${total} bytes (${(total / 1024).toFixed(1)} KB) gzipped`);
  assert.ok(total <= BUDGET, `${total} bytes > ${BUDGET}`);
});
