// The Node.js side of the sandbox (see runner.py, which confines the process and executes this
// file). One JSON line per call: requests on stdin {"key", "code"?, "args"}, answers on file
// descriptor 3. TypeScript is accepted: its types are stripped by Node itself.
import fs from "node:fs";
import readline from "node:readline";
import { stripTypeScriptTypes } from "node:module";
import { pathToFileURL } from "node:url";

const handlers = new Map();

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
    const line = /scorer-[0-9a-f]+\.mjs:(\d+)/.exec(error.stack ?? "");
    return `${error.name}: ${error.message}${line ? ` (line ${line[1]})` : ""}`;
  }
  return `Error: ${String(error)}`;
}

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  let answer;
  try {
    const request = JSON.parse(line);
    if (!handlers.has(request.key)) handlers.set(request.key, await load(request.key, request.code));
    const args = request.args;
    const value = await handlers.get(request.key)({
      input: args.input, output: args.output, expected: args.expected, metadata: args.metadata,
    });
    answer = JSON.stringify({ ok: true, value: value === undefined ? null : value });
  } catch (error) {
    answer = JSON.stringify({ ok: false, error: describe(error) });
  }
  fs.writeSync(3, answer + "\n");
}
