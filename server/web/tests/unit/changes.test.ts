// The line numbers a comment on a diff line names (src/changes.tsx).
import { describe, expect, it } from "vitest";
import { parseDiff } from "../../src/changes";

const DIFF = [
  "diff --git a/f.txt b/f.txt",
  "index 1111111..2222222 100644",
  "--- a/f.txt",
  "+++ b/f.txt",
  "@@ -10,4 +10,4 @@ fn head",
  " ten",
  "-eleven",
  "+ELEVEN",
  " twelve",
  "@@ -40 +40,2 @@",
  " forty",
  "+forty-one",
  "\\ No newline at end of file",
  "",
].join("\n");

describe("parseDiff", () => {
  const lines = parseDiff(DIFF);
  const at = (text: string) => lines.find((l) => l.text === text);

  it("keeps every line, headers without a line number", () => {
    expect(lines.map((l) => l.text)).toEqual(DIFF.split("\n").slice(0, -1));
    for (const t of ["diff --git a/f.txt b/f.txt", "--- a/f.txt", "+++ b/f.txt", "@@ -40 +40,2 @@", "\\ No newline at end of file"]) {
      expect(at(t)?.line).toBeNull();
    }
  });

  it("numbers context and added lines on the new side, deleted lines on the old side", () => {
    expect(at(" ten")).toMatchObject({ kind: "ctx", line: 10 });
    expect(at("-eleven")).toMatchObject({ kind: "del", line: 11 });
    expect(at("+ELEVEN")).toMatchObject({ kind: "add", line: 11 });
    expect(at(" twelve")).toMatchObject({ kind: "ctx", line: 12 });
    expect(at(" forty")).toMatchObject({ kind: "ctx", line: 40 });
    expect(at("+forty-one")).toMatchObject({ kind: "add", line: 41 });
  });

  it("a new file's lines start at 1", () => {
    const d = parseDiff("--- /dev/null\n+++ b/n.txt\n@@ -0,0 +1,2 @@\n+a\n+b\n");
    expect(d.filter((l) => l.kind === "add").map((l) => l.line)).toEqual([1, 2]);
  });
});
