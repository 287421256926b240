#!/usr/bin/env node
/**
 * Builds a JavaScript plugin into a Weir component with ComponentizeJS, as
 * installed by Weir's `scripts/setup-polyglot`:
 *
 *     node weir_plugin/build.mjs --plugin my_plugin.js --wit wit -o my-plugin.wasm
 *
 * The plugin module's default export is a `Transform` or `Router` subclass;
 * this script writes the component's entry module (which imports the host
 * functions from `weir:cdc/host` and exports `init`, `onTable`, ...), so the
 * plugin's own files never import anything Node.js cannot load, and
 * `node --test` runs them as they are.
 *
 * Every optional WASI feature of the engine is disabled: the component imports
 * only Weir's own interfaces. So `Date.now()` traps (use `event.source`'s
 * times), `Math.random()` is deterministic, and `console.*` goes to Weir's log.
 *
 * Options: `--world transform|router` (default: from the default export's
 * base class), `--root DIR` (the directory the component's module loader
 * sees; default: the directory that holds `weir_plugin/`; every import must
 * stay inside it), `WEIR_TOOLS_DIR` (default `~/.cache/weir/tools`).
 */

import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { basename, dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { parseArgs } from "node:util";

import { Router, Transform } from "./index.js";

// The engine features a plugin never needs: each would add WASI imports.
const DISABLED_FEATURES = ["stdio", "random", "clocks", "http", "fetch-event"];

const helperDir = dirname(fileURLToPath(import.meta.url));

function fail(message) {
  console.error(`build.mjs: ${message}`);
  process.exit(2);
}

const { values: opts } = parseArgs({
  options: {
    plugin: { type: "string" },
    wit: { type: "string" },
    out: { type: "string", short: "o" },
    world: { type: "string" },
    root: { type: "string" },
  },
});
if (!opts.plugin || !opts.wit || !opts.out) {
  fail("usage: build.mjs --plugin PLUGIN.js --wit WIT_PATH -o OUT.wasm [--world transform|router] [--root DIR]");
}

const pluginPath = resolve(opts.plugin);
const root = resolve(opts.root ?? dirname(helperDir));
const witPath = resolve(opts.wit);
const outPath = resolve(opts.out);
for (const [what, p] of [["plugin", pluginPath], ["helper", helperDir]]) {
  if (!p.startsWith(root + sep)) fail(`the ${what} (${p}) must be inside --root ${root}`);
}

// Load the plugin natively first: a syntax error or a missing default export
// is reported here, by Node, instead of from inside the engine.
const Plugin = (await import(pathToFileURL(pluginPath).href)).default;
let world = opts.world;
if (world === undefined) {
  if (Plugin?.prototype instanceof Transform) world = "transform";
  else if (Plugin?.prototype instanceof Router) world = "router";
  else fail(`${opts.plugin}: the default export must be a class extending Transform or Router`);
}
if (world !== "transform" && world !== "router") fail(`--world must be transform or router, got ${world}`);

// The host interface is imported under its versioned name, taken from the WIT.
const witText = await readWit(witPath);
const version = /^\s*package\s+weir:cdc@([^;\s]+)\s*;/m.exec(witText)?.[1];
if (version === undefined) fail(`${witPath}: no \`package weir:cdc@VERSION;\` line`);

const tools = process.env.WEIR_TOOLS_DIR || join(homedir(), ".cache", "weir", "tools");
const componentizeJs = join(tools, "node", "node_modules", "@bytecodealliance", "componentize-js", "src", "componentize.js");
try {
  await stat(componentizeJs);
} catch {
  fail(`ComponentizeJS is not installed at ${componentizeJs}: run toolchain/install.sh (a project's build.sh does; in Weir's repository, scripts/setup-polyglot)`);
}
const { componentize } = await import(pathToFileURL(componentizeJs).href);

const buildDir = await mkdtemp(join(root, ".weir-build-"));
try {
  const entry = join(buildDir, "entry.js");
  const from = (p) => JSON.stringify("./" + relative(buildDir, p).split(sep).join("/"));
  const exportsOf = world === "transform" ? "exportTransform" : "exportRouter";
  const names = world === "transform" ? ["init", "onTable", "process", "commit"] : ["init", "onTable", "route"];
  await writeFile(
    entry,
    [
      `import * as host from "weir:cdc/host@${version}";`,
      `import { ${exportsOf}, componentSetup } from ${from(join(helperDir, "index.js"))};`,
      `import Plugin from ${from(pluginPath)};`,
      `componentSetup(host);`,
      `const world = ${exportsOf}(Plugin, host);`,
      ...names.map((n) => `export const ${n} = world.${n};`),
      "",
    ].join("\n"),
  );
  // ComponentizeJS shows the component's module loader the working
  // directory, when the entry is inside it.
  process.chdir(root);
  const { component } = await componentize({
    sourcePath: entry,
    witPath,
    worldName: world,
    disableFeatures: DISABLED_FEATURES,
  });
  await writeFile(outPath, component);
  console.error(`build.mjs: ${basename(outPath)}: ${component.length} bytes (${world})`);
} finally {
  await rm(buildDir, { recursive: true, force: true });
}

async function readWit(p) {
  if ((await stat(p)).isFile()) return readFile(p, "utf8");
  const file = join(p, "weir-cdc.wit");
  return readFile(file, "utf8").catch(() => fail(`${p}: expected a .wit file or a directory holding weir-cdc.wit`));
}
