/**
 * Write Weir transforms and routers in JavaScript.
 *
 * Weir hands plugins batches of committed changes whose rows are positional
 * value lists, and announces each table's columns once through `on-table`.
 * This module keeps those announcements so plugin code reads and writes
 * columns by name:
 *
 *     import { Outcome, Transform } from "./weir_plugin/index.js";
 *
 *     export default class DropTestAccounts extends Transform {
 *       constructor(config) {
 *         super();
 *         this.domain = config.get("domain", "@test.invalid");
 *       }
 *       process(event) {
 *         const email = event.text("email");
 *         return email?.endsWith(this.domain) ? Outcome.DROP : Outcome.KEEP;
 *       }
 *     }
 *
 * `build.mjs` (next to this file) wraps the default export in the
 * component's exports with `exportTransform`; `testing.js` drives the same
 * exports natively under `node --test`.
 *
 * Values are the contract's `value` variant as the component model's
 * JavaScript bindings carry it: `{ tag: "text", val: "a" }`,
 * `{ tag: "int", val: 1n }` (64-bit integers are BigInts), `NULL`,
 * `UNCHANGED`. Build them with `Value.text("a")` and friends, or pass plain
 * values to `event.set`. Options are `undefined` when absent.
 *
 * This file must stay free of Node.js APIs: it runs inside the component.
 */

/** SQL NULL. */
export const NULL = Object.freeze({ tag: "null" });
/** A TOASTed value the UPDATE did not send: unknown to the plugin, not NULL. */
export const UNCHANGED = Object.freeze({ tag: "unchanged" });

const S64_MIN = -(1n << 63n);
const S64_MAX = (1n << 63n) - 1n;

function s64(x) {
  const v = BigInt(x);
  if (v < S64_MIN || v > S64_MAX) {
    throw new RangeError(`${v} does not fit a 64-bit int value; use Value.numeric(String(x))`);
  }
  return v;
}

/** Constructors of the `value` variant, one per case. */
export const Value = Object.freeze({
  null: NULL,
  unchanged: UNCHANGED,
  boolean: (b) => ({ tag: "boolean", val: Boolean(b) }),
  int: (i) => ({ tag: "int", val: s64(i) }),
  float: (f) => ({ tag: "float", val: Number(f) }),
  numeric: (s) => ({ tag: "numeric", val: String(s) }),
  text: (s) => ({ tag: "text", val: String(s) }),
  bytes: (b) => ({ tag: "bytes", val: b instanceof Uint8Array ? b : Uint8Array.from(b) }),
  /** Days since 1970-01-01. */
  date: (d) => ({ tag: "date", val: Number(d) }),
  /** Microseconds since midnight. */
  time: (us) => ({ tag: "time", val: s64(us) }),
  /** Microseconds since 1970-01-01 00:00:00, no time zone. */
  timestamp: (us) => ({ tag: "timestamp", val: s64(us) }),
  /** Microseconds since 1970-01-01 00:00:00 UTC. */
  timestamptz: (us) => ({ tag: "timestamptz", val: s64(us) }),
  uuid: (s) => ({ tag: "uuid", val: String(s) }),
  json: (s) => ({ tag: "json", val: String(s) }),
  other: (s) => ({ tag: "other", val: String(s) }),
});

const TAGS = new Set(Object.keys(Value));
const TEXT_TAGS = new Set(["text", "numeric", "uuid", "json", "other"]);

/**
 * The contract value for `x`: values pass through; `null`/`undefined` are
 * NULL, booleans boolean, BigInts and whole numbers int, other numbers
 * float, strings text, Uint8Arrays bytes.
 */
export function value(x) {
  if (x === null || x === undefined) return NULL;
  switch (typeof x) {
    case "boolean":
      return Value.boolean(x);
    case "bigint":
      return Value.int(x);
    case "number":
      return Number.isInteger(x) ? Value.int(x) : Value.float(x);
    case "string":
      return Value.text(x);
    case "object":
      if (x instanceof Uint8Array) return Value.bytes(x);
      if (TAGS.has(x.tag)) return x;
  }
  throw new TypeError(
    `cannot make a column value of ${Object.prototype.toString.call(x)}; ` +
      "use a Value constructor, such as Value.json(JSON.stringify(x))",
  );
}

/** Whether `v` is SQL NULL. */
export const isNull = (v) => v?.tag === "null";
/** Whether `v` is a TOASTed value the UPDATE did not send. */
export const isUnchanged = (v) => v?.tag === "unchanged";
/** The text of text-like values (text, numeric, uuid, json, other), else `undefined`. */
export const asStr = (v) => (TEXT_TAGS.has(v?.tag) ? v.val : undefined);
/** The BigInt of an int value, else `undefined`. */
export const asInt = (v) => (v?.tag === "int" ? v.val : undefined);
/** The boolean of a boolean value, else `undefined`. */
export const asBool = (v) => (v?.tag === "boolean" ? v.val : undefined);
/** The bytes of a bytes value, else `undefined`. */
export const asBytes = (v) => (v?.tag === "bytes" ? v.val : undefined);

/** A Number from an int, float or numeric value, else `undefined`. */
export function asNumber(v) {
  switch (v?.tag) {
    case "int":
    case "float":
      return Number(v.val);
    case "numeric": {
      const n = Number(v.val);
      return Number.isNaN(n) && v.val !== "NaN" ? undefined : n;
    }
  }
  return undefined;
}

/**
 * A text form of `v`, `undefined` for NULL and unchanged values: text-like
 * values as they are, booleans `true`/`false`, bytes in Postgres's hex form
 * (`\x0aff`), dates, times and timestamps as their raw numbers.
 */
export function toText(v) {
  if (v === undefined || v.tag === "null" || v.tag === "unchanged") return undefined;
  if (TEXT_TAGS.has(v.tag)) return v.val;
  if (v.tag === "bytes") {
    return "\\x" + Array.from(v.val, (b) => b.toString(16).padStart(2, "0")).join("");
  }
  return String(v.val);
}

/** A plugin used an event wrongly (no such column, no such row). */
export class PluginError extends Error {
  constructor(message) {
    super(message);
    this.name = "PluginError";
  }
}

/** A configuration mistake: thrown from a plugin's constructor it refuses the plugin. */
export class ConfigError extends Error {
  constructor(message) {
    super(message);
    this.name = "ConfigError";
  }
}

// --- destinations and emits -------------------------------------------------

/**
 * The sink `name` from the configuration, at `topic` if given (which may hold
 * `{schema}`, `{table}` and `{op}` placeholders).
 */
export function sink(name, topic) {
  return { sink: String(name), topic: topic ?? undefined };
}

function destination(d) {
  if (typeof d === "string") return sink(d);
  if (typeof d === "object" && d !== null && typeof d.sink === "string") return d;
  throw new TypeError(`expected a destination (sink(...)) or a sink name, not ${String(d)}`);
}

const encoder = new TextEncoder();
const bytesOf = (x) =>
  x === undefined || x === null ? undefined : typeof x === "string" ? encoder.encode(x) : Uint8Array.from(x);

/**
 * Bytes a sink writes as they are (strings are encoded as UTF-8), delivered
 * to `to`, or where the router decides.
 */
export function emitRaw(value, { key, headers = [], to } = {}) {
  const message = {
    key: bytesOf(key),
    value: bytesOf(value),
    headers: headers.map(([name, v]) => [String(name), bytesOf(v)]),
  };
  return { destination: to ?? undefined, payload: { tag: "raw", val: message } };
}

/** A change (rows positional) to deliver to `to`, or where the router decides. */
export function emitChange(change, to) {
  return { destination: to ?? undefined, payload: { tag: "change", val: change } };
}

// --- tables and events ------------------------------------------------------

/**
 * A captured table as announced by the host, with its columns by name. The
 * name-to-position map is built once per announced version.
 */
export class Table {
  /** Wraps an announcement (`{ id, version, schema, name, columns }`). */
  constructor(raw) {
    /** The announcement as the host sent it. */
    this.raw = raw;
    /** Column name to row position. */
    this.index = new Map(raw.columns.map((c, i) => [c.name, i]));
  }

  /** A table with no columns yet, for tests: add them with `withKey` and `withColumn`. */
  static create(id, schema, name, { version = 1 } = {}) {
    return new Table({ id, version, schema, name, columns: [] });
  }

  /** This table with a key (replica identity) column added. */
  withKey(name, typeName) {
    return this.#with(name, typeName, true);
  }

  /** This table with an ordinary column added. */
  withColumn(name, typeName) {
    return this.#with(name, typeName, false);
  }

  /** This table at another schema version. */
  withVersion(version) {
    return new Table({ ...this.raw, version, columns: [...this.raw.columns] });
  }

  #with(name, typeName, key) {
    return new Table({ ...this.raw, columns: [...this.raw.columns, { name, typeName, key }] });
  }

  /** The table's id (its Postgres OID). */
  get id() {
    return this.raw.id;
  }

  /** The schema version; it grows when the columns change. */
  get version() {
    return this.raw.version;
  }

  /** The schema (namespace) name, such as `public`. */
  get schema() {
    return this.raw.schema;
  }

  /** The table name. */
  get name() {
    return this.raw.name;
  }

  /** `schema.name`. */
  get qualifiedName() {
    return `${this.raw.schema}.${this.raw.name}`;
  }

  /** The columns (`name`, `typeName`, `key`), in row order. */
  get columns() {
    return this.raw.columns;
  }

  /** The column names, in row order. */
  get columnNames() {
    return [...this.index.keys()];
  }

  /** Whether `qualified` is `schema.name`, or `schema.*`, or `*`. */
  matches(qualified) {
    if (qualified === "*") return true;
    const dot = qualified.indexOf(".");
    if (dot < 0) return false;
    const name = qualified.slice(dot + 1);
    return qualified.slice(0, dot) === this.raw.schema && (name === "*" || name === this.raw.name);
  }

  /** The position of column `name` in a row, or `undefined`. */
  columnIndex(name) {
    return this.index.get(name);
  }

  /** The value of column `name` in `row` (a row of this table), or `undefined`. */
  value(row, name) {
    const i = this.index.get(name);
    return i === undefined ? undefined : row[i];
  }

  /** `row` as a `{ column: value }` object. */
  rowObject(row) {
    const out = {};
    let i = 0;
    for (const name of this.index.keys()) out[name] = row[i++];
    return out;
  }
}

/**
 * One change seen through its table: its rows by column name. Values changed
 * with `set` and `setBefore` are delivered when the plugin answers
 * `Outcome.KEEP` or `Outcome.route(...)`.
 */
export class Event {
  constructor(change, table) {
    /** The change as the contract carries it, rows positional. */
    this.change = change;
    /** The `Table` the change refers to; `undefined` for messages. */
    this.table = table;
    /** Whether the plugin changed any value. */
    this.modified = false;
  }

  /** What happened: "insert", "update", "delete", "truncate", "message" or "read". */
  get op() {
    return this.change.op;
  }

  /** The table's schema name, `undefined` for messages. */
  get schema() {
    return this.table?.raw.schema;
  }

  /** The table's name, `undefined` for messages. */
  get tableName() {
    return this.table?.raw.name;
  }

  /** Whether this is a change to `schema.name` (or `schema.*`). */
  isTable(qualified) {
    return this.table !== undefined && this.table.matches(qualified);
  }

  /** Where in the WAL the change comes from (LSNs and times are BigInts). */
  get source() {
    return this.change.source;
  }

  /** The message (`prefix`, `content`) of a message event. */
  get message() {
    return this.change.message;
  }

  /**
   * The new row's value of `column`; `undefined` when there is no new row
   * (deletes, truncates, messages) or no such column.
   */
  after(column) {
    const row = this.change.after;
    if (row == null || this.table === undefined) return undefined;
    const i = this.table.index.get(column);
    return i === undefined ? undefined : row[i];
  }

  /**
   * The old row's value of `column`. Which columns the old row holds depends
   * on the table's REPLICA IDENTITY (usually just the key).
   */
  before(column) {
    const row = this.change.before;
    if (row == null || this.table === undefined) return undefined;
    const i = this.table.index.get(column);
    return i === undefined ? undefined : row[i];
  }

  /** The value of `column` in the row the event is about: the new row, or the old one for deletes. */
  value(column) {
    return this.change.after != null ? this.after(column) : this.before(column);
  }

  /** The text of a text-like `value(column)`, else `undefined`. */
  text(column) {
    return asStr(this.value(column));
  }

  /** Sets `column` of the new row; a `PluginError` without a new row or such a column. */
  set(column, v) {
    this.#set(this.change.after, "new", column, v);
  }

  /** Sets `column` of the old row. */
  setBefore(column, v) {
    this.#set(this.change.before, "old", column, v);
  }

  #set(row, which, column, v) {
    if (row == null) throw new PluginError(`a ${this.op} event has no ${which} row`);
    const i = this.table?.index.get(column);
    if (i === undefined) {
      throw new PluginError(
        this.table === undefined
          ? `the event has no table, so no column \`${column}\``
          : `table ${this.table.qualifiedName} has no column \`${column}\``,
      );
    }
    row[i] = value(v);
    this.modified = true;
  }

  /** The new row as `[column, value]` pairs; empty without one. */
  afterColumns() {
    return this.#columns(this.change.after);
  }

  /** The old row as `[column, value]` pairs; empty without one. */
  beforeColumns() {
    return this.#columns(this.change.before);
  }

  #columns(row) {
    if (row == null || this.table === undefined) return [];
    return this.table.columnNames.map((name, i) => [name, row[i]]);
  }

  /** A copy of the (possibly modified) change, to deliver to `to` or where the router decides. */
  toEmit(to) {
    return emitChange(copyChange(this.change), to);
  }
}

function copyChange(change) {
  return {
    ...change,
    before: change.before == null ? change.before : [...change.before],
    after: change.after == null ? change.after : [...change.after],
  };
}

/** What a transform answers for one event. */
export class Outcome {
  constructor(kind, items = [], message = "", retryable = false) {
    this.kind = kind;
    this.items = items;
    this.message = message;
    this.retryable = retryable;
    Object.freeze(this);
  }

  /**
   * Deliver the (possibly modified) event to each destination (from `sink`,
   * or a sink name); none delivers it nowhere.
   */
  static route(...destinations) {
    return new Outcome("route", destinations.map(destination));
  }

  /** Deliver these emits instead of the event (zero or more). */
  static emit(...emits) {
    for (const e of emits) {
      if (typeof e !== "object" || e === null || !("payload" in e)) {
        throw new TypeError(`Outcome.emit takes emits (emitRaw, emitChange, event.toEmit), not ${String(e)}`);
      }
    }
    return new Outcome("emit", emits);
  }

  /** The event cannot be processed; the pipeline's error policy decides what happens. */
  static fail(message, retryable = false) {
    return new Outcome("fail", [], String(message), retryable);
  }

  /** A failure that may go away if the event is tried again later. */
  static retryLater(message) {
    return new Outcome("fail", [], String(message), true);
  }
}

/** Deliver the event, with any changes made to it, where the router sends it. */
Outcome.KEEP = new Outcome("keep");
/** Deliver nothing for this event. */
Outcome.DROP = new Outcome("drop");

// --- configuration ----------------------------------------------------------

const TRUE_WORDS = new Set(["true", "yes", "on", "1"]);
const FALSE_WORDS = new Set(["false", "no", "off", "0"]);

/**
 * The plugin's `config` table from weir.toml, as string key/value pairs
 * (nested tables become dotted keys, arrays comma lists). The typed getters
 * throw a `ConfigError` naming the key.
 */
export class Config {
  /** From `[key, value]` pairs or a plain object. */
  constructor(pairs = []) {
    const list = Array.isArray(pairs) ? pairs : Object.entries(pairs);
    this.pairs = list.map(([k, v]) => [String(k), String(v)]);
    // A repeated key: the last wins, as a later line overrides.
    this.map = new Map(this.pairs);
  }

  /** Whether `key` is set. */
  has(key) {
    return this.map.has(key);
  }

  /** The value of `key`, or `fallback`. */
  get(key, fallback = undefined) {
    return this.map.has(key) ? this.map.get(key) : fallback;
  }

  /** The value of `key`; a `ConfigError` when it is absent. */
  require(key) {
    if (!this.map.has(key)) throw new ConfigError(`missing required config key \`${key}\``);
    return this.map.get(key);
  }

  /** The comma-separated items of `key`, trimmed, empty ones skipped; `fallback` when absent. */
  list(key, fallback = []) {
    if (!this.map.has(key)) return [...fallback];
    return this.map
      .get(key)
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
  }

  /** `key` as an integer Number, `fallback` when absent. */
  int(key, fallback = undefined, { min, max } = {}) {
    if (!this.map.has(key)) return fallback;
    const raw = this.map.get(key);
    if (!/^\s*[-+]?\d+\s*$/.test(raw)) {
      throw new ConfigError(`config key \`${key}\`: expected an integer, got ${JSON.stringify(raw)}`);
    }
    return bounded(key, Number(raw), min, max);
  }

  /** `key` as a Number, `fallback` when absent. */
  float(key, fallback = undefined, { min, max } = {}) {
    if (!this.map.has(key)) return fallback;
    const raw = this.map.get(key);
    const n = raw.trim() === "" ? NaN : Number(raw);
    if (Number.isNaN(n)) {
      throw new ConfigError(`config key \`${key}\`: expected a number, got ${JSON.stringify(raw)}`);
    }
    return bounded(key, n, min, max);
  }

  /** `key` as a boolean (true/false, yes/no, on/off, 1/0), `fallback` when absent. */
  bool(key, fallback = undefined) {
    if (!this.map.has(key)) return fallback;
    const raw = this.map.get(key);
    const word = raw.trim().toLowerCase();
    if (TRUE_WORDS.has(word)) return true;
    if (FALSE_WORDS.has(word)) return false;
    throw new ConfigError(`config key \`${key}\`: expected true or false, got ${JSON.stringify(raw)}`);
  }

  /** `key`, which must be one of `choices`; `fallback` when absent. */
  choice(key, choices, fallback = undefined) {
    if (!this.map.has(key)) return fallback;
    const raw = this.map.get(key);
    if (!choices.includes(raw)) {
      throw new ConfigError(
        `config key \`${key}\`: expected one of ${choices.join(", ")}, got ${JSON.stringify(raw)}`,
      );
    }
    return raw;
  }

  /** Every `[key, value]` whose key starts with `prefix`, the prefix removed, in order. */
  withPrefix(prefix) {
    return this.pairs.filter(([k]) => k.startsWith(prefix)).map(([k, v]) => [k.slice(prefix.length), v]);
  }

  /**
   * Throws a `ConfigError` naming any key not in `known` (a prefix ending in
   * `.` admits every key under it), so typos are not silently ignored.
   */
  checkKeys(...known) {
    const unknown = [...this.map.keys()].filter(
      (k) => !known.includes(k) && !known.some((p) => p.endsWith(".") && k.startsWith(p)),
    );
    if (unknown.length > 0) {
      const names = unknown.map((k) => `\`${k}\``).join(", ");
      throw new ConfigError(`unknown config key ${names} (known keys: ${known.join(", ") || "none"})`);
    }
  }

  /** Every `[key, value]`, in order. */
  items() {
    return this.pairs.map(([k, v]) => [k, v]);
  }
}

function bounded(key, n, min, max) {
  if (min !== undefined && n < min) {
    throw new ConfigError(`config key \`${key}\`: ${n} is below the minimum ${min}`);
  }
  if (max !== undefined && n > max) {
    throw new ConfigError(`config key \`${key}\`: ${n} is above the maximum ${max}`);
  }
  return n;
}

// --- host functions ---------------------------------------------------------

const noHost = new Proxy(
  {},
  {
    get(_, name) {
      return () => {
        throw new Error(
          `host function \`${String(name)}\` is only available inside a component or a testing harness`,
        );
      };
    },
  },
);

// The functions of `weir:cdc/host`: the component's import, bound by
// `exportTransform`/`exportRouter`, or a harness's recording stand-in.
let host = noHost;

/**
 * Binds the host functions (`log`, `config`, `count`, `declareTable`); used
 * by the glue and the harness. `undefined` unbinds them.
 */
export function bindHost(h) {
  host = h ?? noHost;
}

/** Adds `delta` (>= 0) to the plugin's counter `name`, exported as `weir_plugin_counter_total{plugin, name}`. */
export function count(name, delta = 1) {
  const d = BigInt(delta);
  if (d < 0n) throw new RangeError(`counter \`${name}\`: delta must not be negative, got ${delta}`);
  if (d > 0n) host.count(name, d);
}

/**
 * Declares a table for changes the plugin makes itself and returns the id to
 * put in `change.table`. `columns` holds `{ name, typeName, key }` objects or
 * `[name, typeName, key]` arrays.
 */
export function declareTable(schema, name, columns) {
  const cols = columns.map((c) =>
    Array.isArray(c) ? { name: c[0], typeName: c[1], key: Boolean(c[2]) } : c,
  );
  return host.declareTable(schema, name, cols);
}

/** Writes to Weir's log, tagged with the plugin's name: `log.info("...")`, or `log("warn", "...")`. */
export const log = Object.assign((level, message) => host.log(level, String(message)), {
  trace: (message) => host.log("trace", String(message)),
  debug: (message) => host.log("debug", String(message)),
  info: (message) => host.log("info", String(message)),
  warn: (message) => host.log("warn", String(message)),
  error: (message) => host.log("error", String(message)),
});

// --- plugin classes and the glue to the exports ------------------------------

/**
 * Base class of transforms. The constructor takes the `Config`; throwing
 * there (best a `ConfigError`) refuses the plugin with that message.
 */
export class Transform {
  /** Called when a table, or a new version of it, is announced; override to precompute per table. */
  onTable(table) {}

  /** Decides what `event` becomes. A thrown error fails the event with its message. */
  process(event) {
    throw new Error("a Transform must define process(event)");
  }

  /**
   * Define this to be called after each transaction's last change (batches
   * are then cut at transaction boundaries); returns emits delivered after
   * the transaction's changes. A thrown error traps the instance.
   */
  commit(txn) {
    return [];
  }
}

/** Base class of routers: decide where each event goes, unmodified. */
export class Router {
  /** Called when a table, or a new version of it, is announced. */
  onTable(table) {}

  /**
   * The destinations (from `sink`, or sink names) of `event`; an empty list
   * delivers it nowhere. A thrown error traps the instance.
   */
  route(event) {
    throw new Error("a Router must define route(event)");
  }
}

const NOT_INITIALISED = "the plugin was called before init succeeded";
const WIT_KEEP = Object.freeze({ tag: "keep" });
const WIT_DROP = Object.freeze({ tag: "drop" });

function describe(error) {
  if (error instanceof ConfigError || error instanceof PluginError) return error.message;
  if (error instanceof Error) return `${error.name}: ${error.message}`;
  return String(error);
}

const failed = (message, retryable = false) => ({ tag: "fail", val: { message, retryable } });

function toWit(outcome, event) {
  switch (outcome instanceof Outcome ? outcome.kind : undefined) {
    case "keep":
      if (!event.modified) return WIT_KEEP;
      return { tag: "replace", val: [emitChange(event.change)] };
    case "drop":
      return WIT_DROP;
    case "route": {
      const ds = outcome.items;
      // Every destination but the last gets a copy; the last takes the change itself.
      const emits = ds.map((d, i) => (i + 1 < ds.length ? event.toEmit(d) : emitChange(event.change, d)));
      return { tag: "replace", val: emits };
    }
    case "emit":
      return { tag: "replace", val: [...outcome.items] };
    case "fail":
      return failed(outcome.message, outcome.retryable);
  }
  return failed(`process returned ${String(outcome)}, not an Outcome`);
}

function instantiate(Plugin) {
  try {
    return new Plugin(new Config(host.config()));
  } catch (e) {
    // The component model's `result` error: what a throw from `init` carries.
    throw describe(e);
  }
}

/** Sends console output, which a sandboxed component cannot write, to Weir's log. */
function consoleToLog() {
  const line = (level) => (...args) => host.log(level, args.map(String).join(" "));
  globalThis.console = {
    log: line("info"),
    info: line("info"),
    debug: line("debug"),
    trace: line("trace"),
    warn: line("warn"),
    error: line("error"),
  };
}

/**
 * The component exports (`init`, `onTable`, `process`, `commit`) of the
 * transform class `Plugin`. `hostImport` is the `weir:cdc/host` import; the
 * testing harness passes its stand-in.
 */
export function exportTransform(Plugin, hostImport) {
  if (hostImport !== undefined) bindHost(hostImport);
  let plugin;
  const tables = new Map();
  return {
    init() {
      plugin = instantiate(Plugin);
      // The commit hook is asked for exactly when the plugin defines it.
      return { commit: plugin.commit !== Transform.prototype.commit };
    },
    onTable(raw) {
      const table = new Table(raw);
      tables.set(raw.id, table);
      plugin?.onTable(table);
    },
    process(batch) {
      if (plugin === undefined) return batch.map(() => failed(NOT_INITIALISED));
      const out = new Array(batch.length);
      for (let i = 0; i < batch.length; i++) {
        const change = batch[i];
        const event = new Event(change, tables.get(change.table));
        try {
          out[i] = toWit(plugin.process(event), event);
        } catch (e) {
          out[i] = failed(describe(e));
        }
      }
      return out;
    },
    commit(txn) {
      try {
        return [...plugin.commit(txn)];
      } catch (e) {
        host.log("error", `commit failed: ${describe(e)}`);
        throw e;
      }
    },
  };
}

/** The component exports (`init`, `onTable`, `route`) of the router class `Plugin`. */
export function exportRouter(Plugin, hostImport) {
  if (hostImport !== undefined) bindHost(hostImport);
  let plugin;
  const tables = new Map();
  return {
    init() {
      plugin = instantiate(Plugin);
    },
    onTable(raw) {
      const table = new Table(raw);
      tables.set(raw.id, table);
      plugin?.onTable(table);
    },
    route(batch) {
      if (plugin === undefined) throw new Error(NOT_INITIALISED);
      try {
        return batch.map((change) => [...plugin.route(new Event(change, tables.get(change.table)))].map(destination));
      } catch (e) {
        host.log("error", `route failed: ${describe(e)}`);
        throw e;
      }
    },
  };
}

/** Called by the generated component entry: console output goes to Weir's log. */
export function componentSetup(hostImport) {
  bindHost(hostImport);
  consoleToLog();
}
