// `redact`: an amarre adapter written in JavaScript. It runs the operator's
// command (any agent that already speaks the client dialect, pi included)
// and masks secrets in the agent's output before it reaches a phone: API
// keys, tokens, private keys, and the exact values the operator lists in
// AMARRE_REDACT_VALUES. Client records go to the agent untouched.
//
// Built into a WebAssembly component with componentize-js (see
// package.json); its Rust twin is adapters-wasm/redact-rs, and both pass
// the transcripts in transcripts/.

import { log } from "amarre:adapter/host@0.1.0";

const VERSION = "0.1.0";
const MASK = "[REDACTED]";
// Operator values shorter than this (in characters) are ignored: masking
// "a" would mask every "a" the agent writes.
const MIN_VALUE_LENGTH = 4;

// One regular expression finds every secret, leftmost first; at one
// position the alternatives are tried in this order:
//  1. the operator's values (longest first);
//  2. a private key block: its BEGIN marker, everything up to its END
//     marker, or up to the end of the JSON string holding it (an unescaped
//     `"`), or the end of the line;
//  3. a token, where the character before it is not a letter, digit or `_`
//     (or it ends a JSON escape such as `\n`): a prefix, then at least so
//     many characters of its alphabet, as many as follow. `Bearer ` is kept.
// (A regular expression runs in the engine's native matcher; a scanning
// loop written in JavaScript is interpreted and a thousand times slower.)
const KEY = "-----BEGIN [A-Z ]*?PRIVATE KEY-----"
  + "(?:\\\\[\\s\\S]?|(?!-----END [A-Z ]*?PRIVATE KEY-----)[^\"\\\\])*"
  + "(?:-----END [A-Z ]*?PRIVATE KEY-----)?";
const TOKEN = "(?:(?<![A-Za-z0-9_])|(?<=\\\\[bfnrt]))(?:"
  + [
    "sk-[A-Za-z0-9_-]{20,}",
    "gh[pousr]_[A-Za-z0-9]{30,}",
    "github_pat_[A-Za-z0-9_]{20,}",
    "glpat-[A-Za-z0-9_-]{20,}",
    "A[KS]IA[A-Z0-9]{16,}",
    "xox[baprs]-[A-Za-z0-9-]{10,}",
    "(Bearer )[A-Za-z0-9._~+/=-]{20,}",
  ].join("|")
  + ")";

function escapeRegExp(text) {
  return text.replace(/[\\^$.*+?()[\]{}|\/-]/g, "\\$&");
}

function pattern(values) {
  const parts = values.map(escapeRegExp);
  parts.push(KEY, TOKEN);
  return new RegExp(parts.join("|"), "g");
}

// The text with every secret replaced by MASK.
function redact(text, re) {
  re.lastIndex = 0;
  return text.replace(re, (_match, bearer) => (bearer ? bearer + MASK : MASK));
}

// The operator's values, as written and as they appear inside a JSON
// string, longest first so a value containing another wins.
function valuesFrom(env) {
  const found = env.find(([name]) => name === "AMARRE_REDACT_VALUES");
  if (!found) return [];
  const values = new Set();
  for (const raw of found[1].split(",")) {
    const v = raw.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, "");
    if (v.length === 0) continue;
    if ([...v].length < MIN_VALUE_LENGTH) {
      log("warn", `AMARRE_REDACT_VALUES: ignoring a value shorter than ${MIN_VALUE_LENGTH} characters`);
      continue;
    }
    values.add(v);
    values.add(JSON.stringify(v).slice(1, -1));
  }
  return [...values].sort((a, b) => b.length - a.length || (a < b ? -1 : a > b ? 1 : 0));
}

class Session {
  constructor(values) {
    this.re = pattern(values);
  }

  // The values come from the spawn request again, so a newer version
  // needs no state: hot reload moves live sessions at once.
  static create(request, _saved) {
    return new Session(valuesFrom(request.env));
  }

  fromClient(record) {
    return [{ tag: "to-agent", val: record }];
  }

  fromAgent(line) {
    return [{ tag: "to-client", val: redact(line, this.re) }];
  }

  onExit(_code, _signal) {
    return [];
  }

  save() {
    return "{}";
  }
}

export function info() {
  return {
    name: "redact",
    version: VERSION,
    programs: [],
    programEnv: [],
    capabilities: ["state-handover"],
  };
}

export function spawn(request) {
  if (request.command === undefined || request.command === null) {
    throw { tag: "unsupported", val: "the redact adapter needs the instance's `command`" };
  }
  return {
    command: request.command,
    args: request.args,
    env: [],
    cwd: request.cwd,
    files: [],
    passthroughFromClient: true,
    passthroughFromAgent: false,
  };
}

export const translator = { Session };
