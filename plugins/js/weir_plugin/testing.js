/**
 * Unit-testing plugins natively, under `node --test`, without WebAssembly.
 *
 * The harnesses drive a plugin through the very exports the component has
 * (`exportTransform` / `exportRouter`): `init` (reading the configuration from
 * the host), `onTable` for each announced table, then batches of changes built
 * with `insert`, `update`, `del`, `truncate`, `read` and `message`. A native
 * host stands in for Weir's and records counters, log lines and declared
 * tables:
 *
 *     import { test } from "node:test";
 *     import assert from "node:assert/strict";
 *     import { Table, Value } from "./weir_plugin/index.js";
 *     import { TransformHarness, insert, emittedRows } from "./weir_plugin/testing.js";
 *     import Lowercase from "./lowercase.js";
 *
 *     const USERS = Table.create(1, "public", "users").withKey("id", "int8").withColumn("email", "text");
 *
 *     test("lowercases", () => {
 *       const h = new TransformHarness(Lowercase, { columns: "email" });
 *       h.announce(USERS);
 *       const out = h.processOne(insert(USERS, { id: 1, email: "A@B.C" }));
 *       assert.deepEqual(emittedRows(USERS, out)[0].email, Value.text("a@b.c"));
 *     });
 */

import { Config, NULL, bindHost, exportRouter, exportTransform, value } from "./index.js";

/** What a plain keep looks like from the host's side. */
export const KEEP = Object.freeze({ tag: "keep" });
/** What a drop looks like from the host's side. */
export const DROP = Object.freeze({ tag: "drop" });

const LEVELS = new Set(["trace", "debug", "info", "warn", "error"]);
const U64_MAX = (1n << 64n) - 1n;

/** The plugin refused its configuration; `message` is its message. */
export class InitError extends Error {
  constructor(message) {
    super(message);
    this.name = "InitError";
  }
}

/**
 * Weir's host functions, natively, checking arguments as the component
 * boundary would: `counters` (`{ name: total }` as BigInts), `logs`
 * (`[level, message]`), `declared` (`[schema, name, columns]`; the id of each
 * is its index + 100000).
 */
export class NativeHost {
  constructor(config = []) {
    this.pairs = new Config(config).items();
    this.counters = {};
    this.logs = [];
    this.declared = [];
  }

  config() {
    return this.pairs.map(([k, v]) => [k, v]);
  }

  count(name, delta) {
    if (typeof name !== "string") throw new TypeError("counter name must be a string");
    if (typeof delta !== "bigint" || delta < 0n || delta > U64_MAX) {
      throw new TypeError(`counter delta must be a u64 BigInt, got ${String(delta)}`);
    }
    this.counters[name] = (this.counters[name] ?? 0n) + delta;
  }

  log(level, message) {
    if (!LEVELS.has(level)) throw new TypeError(`unknown log level ${String(level)}`);
    this.logs.push([level, String(message)]);
  }

  declareTable(schema, name, columns) {
    const key = JSON.stringify([schema, name, columns.map((c) => [c.name, c.typeName, c.key])]);
    let i = this.declared.findIndex((d) => JSON.stringify(d) === key);
    if (i < 0) {
      this.declared.push(JSON.parse(key));
      i = this.declared.length - 1;
    }
    return 100000 + i;
  }
}

class Harness {
  constructor(exportsOf, Plugin, config) {
    this.host = new NativeHost(config ?? []);
    this.world = exportsOf(Plugin, this.host);
    try {
      this.hooks = this.world.init();
    } catch (e) {
      if (typeof e === "string") throw new InitError(e);
      throw e;
    }
  }

  // Bound on every call, so two harnesses in one test stay apart.
  use() {
    bindHost(this.host);
  }

  /** Counter totals, `{ name: BigInt }`. */
  get counters() {
    return this.host.counters;
  }

  /** Log lines, `[level, message]`. */
  get logs() {
    return this.host.logs;
  }

  /** Announces tables (`on-table`), as the host does before their first change. */
  announce(...tables) {
    this.use();
    for (const t of tables) this.world.onTable(t.raw);
  }
}

/** Runs a `Transform` subclass as the host would; `InitError` when it refuses `config`. */
export class TransformHarness extends Harness {
  constructor(Plugin, config) {
    super(exportTransform, Plugin, config);
  }

  /** Whether `init` asked for the commit hook. */
  get wantsCommit() {
    return this.hooks.commit === true;
  }

  /** Processes a batch: one contract outcome per change. */
  process(batch) {
    this.use();
    const out = this.world.process(batch);
    if (out.length !== batch.length) {
      throw new Error(`${out.length} outcomes for ${batch.length} changes`);
    }
    return out;
  }

  /** Processes a batch of one change. */
  processOne(change) {
    return this.process([change])[0];
  }

  /** The `commit` hook, only for plugins that asked for it. */
  commit(txn = transaction()) {
    if (!this.wantsCommit) throw new Error("the plugin did not ask for the commit hook");
    this.use();
    return this.world.commit(txn);
  }
}

/** Runs a `Router` subclass as the host would. */
export class RouterHarness extends Harness {
  constructor(Plugin, config) {
    super(exportRouter, Plugin, config);
  }

  /** Routes a batch: one list of destinations per change. */
  route(batch) {
    this.use();
    const out = this.world.route(batch);
    if (out.length !== batch.length) throw new Error(`${out.length} routes for ${batch.length} changes`);
    return out;
  }

  /** Routes a batch of one change. */
  routeOne(change) {
    return this.route([change])[0];
  }
}

// --- building changes --------------------------------------------------------

/** A plausible WAL position. */
export function source(seq = 0) {
  return { commitLsn: 0x100n, lsn: 0x80n, xid: 700, commitTimeMicros: 0n, seq };
}

/** The transaction `source()` belongs to. */
export function transaction(xid = 700) {
  return { xid, commitLsn: 0x100n, commitTimeMicros: 0n };
}

/** A row of `table` with the given values (plain or contract values), every other column NULL. */
export function row(table, values = {}) {
  const out = new Array(table.columns.length).fill(NULL);
  for (const [name, v] of Object.entries(values)) {
    const i = table.columnIndex(name);
    if (i === undefined) throw new Error(`table ${table.qualifiedName} has no column \`${name}\``);
    out[i] = value(v);
  }
  return out;
}

const change = (op, tableId, before, after) => ({
  op,
  table: tableId,
  before,
  after,
  message: undefined,
  source: source(),
});

/** An INSERT of a row with the given values. */
export const insert = (table, values) => change("insert", table.id, undefined, row(table, values));
/** A row read by an initial snapshot. */
export const read = (table, values) => change("read", table.id, undefined, row(table, values));
/** An UPDATE from `before` (often just the key) to `after`. */
export const update = (table, before, after) => change("update", table.id, row(table, before), row(table, after));
/** A DELETE of the row identified by `before`. */
export const del = (table, before) => change("delete", table.id, row(table, before), undefined);
export { del as delete };
/** A TRUNCATE of `table`. */
export const truncate = (table) => change("truncate", table.id, undefined, undefined);

/** A message written with `pg_logical_emit_message`. */
export function message(prefix, content) {
  const bytes = typeof content === "string" ? new TextEncoder().encode(content) : Uint8Array.from(content);
  return { ...change("message", 0, undefined, undefined), message: { prefix, content: bytes } };
}

// --- reading outcomes --------------------------------------------------------

/** The emits of a `replace` outcome; empty for any other. */
export const emits = (outcome) => (outcome.tag === "replace" ? [...outcome.val] : []);

/** The changes an outcome delivers instead of the event. */
export const emittedChanges = (outcome) =>
  emits(outcome)
    .filter((e) => e.payload.tag === "change")
    .map((e) => e.payload.val);

/** The `after` (or `before`) rows of the emitted changes, as `{ column: value }` objects. */
export const emittedRows = (table, outcome, which = "after") =>
  emittedChanges(outcome)
    .map((c) => c[which])
    .filter((r) => r != null)
    .map((r) => table.rowObject(r));

/** The failure (`message`, `retryable`) of a failed outcome, else `undefined`. */
export const failure = (outcome) => (outcome.tag === "fail" ? outcome.val : undefined);
