// `my-adapter`: a template for an amarre adapter in JavaScript.
//
// It runs the operator's `command` (an agent that already speaks the
// client dialect) and passes its JSON records through, and turns the lines
// that are not JSON objects (stray log output on stdout) into notifications
// the client shows, instead of records the client cannot read.
//
// WIT to JavaScript: functions and fields are camelCase, a `result` is a
// return value or a thrown `{ tag, val }` error, a `variant` is
// `{ tag, val }`, an `option` is a value or `undefined`, an `enum` a string.

import { newId } from "amarre:adapter/host@0.1.0";

export function info() {
  return {
    name: "my-adapter",
    version: "0.1.0",
    programs: [],
    programEnv: [],
    capabilities: [],
  };
}

export function spawn(request) {
  if (request.command === undefined) {
    throw { tag: "unsupported", val: "set the instance's `command`" };
  }
  return {
    command: request.command,
    args: request.args,
    env: [],
    cwd: request.cwd,
    files: [],
    // Client records go to the agent as they are: `fromClient` is never
    // called. Agent lines go through `fromAgent`.
    passthroughFromClient: true,
    passthroughFromAgent: false,
  };
}

function isObject(line) {
  try {
    const value = JSON.parse(line);
    return typeof value === "object" && value !== null && !Array.isArray(value);
  } catch {
    return false;
  }
}

class Session {
  static create(_request, _saved) {
    return new Session();
  }

  fromClient(record) {
    return [{ tag: "to-agent", val: record }];
  }

  fromAgent(line) {
    if (line.trim() === "") return [];
    if (isObject(line)) return [{ tag: "to-client", val: line }];
    const notice = {
      type: "extension_ui_request",
      id: newId(),
      method: "notify",
      message: line,
      notifyType: "info",
    };
    return [{ tag: "to-client", val: JSON.stringify(notice) }];
  }

  onExit(_code, _signal) {
    return [];
  }

  save() {
    return undefined;
  }
}

export const translator = { Session };
