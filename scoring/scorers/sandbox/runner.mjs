// The Node.js side of the sandbox (see runner.py, which confines the process and executes this
// file). One JSON line per call: requests on stdin {"key", "code"?, "args"}, answers on file
// descriptor 3. TypeScript is accepted: its types are stripped by Node itself.
import fs from "node:fs";
import readline from "node:readline";
import { stripTypeScriptTypes } from "node:module";
import { pathToFileURL } from "node:url";

const handlers = new Map();
// What user code prints goes nowhere. Standard error stays open for V8's own fatal messages,
// which say why a process died; user writes there could fill it (RLIMIT_FSIZE) and crash it.
for (const stream of [process.stdout, process.stderr]) {
  stream.write = (...args) => {
    const callback = args.find((arg) => typeof arg === "function");
    if (callback) queueMicrotask(callback);
    return true;
  };
}

async function load(key, code) {
  let source = stripTypeScriptTypes(code);
  // `function handler` without `export` is accepted too.
  if (!/\bexport\b/.test(source) && /\bfunction\s+handler\b|\bhandler\s*=/.test(source)) {
    source += "\nexport { handler };\n";
  }
  const file = `${process.cwd()}/scorer-${key}.mjs`;
  fs.writeFileSync(file, source);
  const module = await import(pathToFileURL(file).href);
  const handler = module.handler ?? module.default;
  if (typeof handler !== "function") throw new Error("The code exports no function named handler.");
  return handler;
}

function describe(error) {
  if (error instanceof Error) {
    const stack = error.stack ?? "";
    // Runtime errors name the module's line; TypeScript syntax errors start their stack with ":<line>".
    const line =
      /scorer-[0-9a-f]+\.mjs:(\d+)/.exec(stack) ??
      (error.code === "ERR_INVALID_TYPESCRIPT_SYNTAX" ? /^[^\n]*:(\d+)\n/.exec(stack) : null);
    return `${error.name}: ${error.message}${line ? ` (line ${line[1]})` : ""}`;
  }
  return `Error: ${String(error)}`;
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  let answer;
  let turn = null;
  try {
    const request = JSON.parse(line);
    turn = request.n;
    if (!handlers.has(request.key)) handlers.set(request.key, await load(request.key, request.code));
    const args = request.args;
    const value = await handlers.get(request.key)({
      input: args.input, output: args.output, expected: args.expected, metadata: args.metadata,
    });
    answer = JSON.stringify({ ok: true, value: value === undefined ? null : value, n: request.n });
  } catch (error) {
    answer = JSON.stringify({ ok: false, error: describe(error), n: turn });
  }
  // In pieces: one write of a huge string needs a native copy of it, beyond the memory limit;
  // the parent stops reading past SCORING_SANDBOX_OUTPUT_BYTES.
  for (let start = 0; start < answer.length; ) {
    let end = Math.min(start + 65536, answer.length);
    const last = answer.charCodeAt(end - 1);
    if (end < answer.length && last >= 0xd800 && last <= 0xdbff) end -= 1; // keep surrogate pairs whole
    fs.writeSync(3, answer.slice(start, end));
    start = end;
  }
  fs.writeSync(3, "\n");
}
