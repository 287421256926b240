// Tests of the helper module and its native harness: `node --test` in plugins/js.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  Config,
  ConfigError,
  NULL,
  Outcome,
  Router,
  Table,
  Transform,
  UNCHANGED,
  Value,
  asNumber,
  asStr,
  bindHost,
  count,
  declareTable,
  emitRaw,
  log,
  sink,
  toText,
  value,
} from "../weir_plugin/index.js";
import {
  DROP,
  InitError,
  KEEP,
  RouterHarness,
  TransformHarness,
  del,
  emits,
  emittedChanges,
  emittedRows,
  failure,
  insert,
  message,
  read,
  truncate,
  update,
} from "../weir_plugin/testing.js";

const PEOPLE = Table.create(1, "public", "people").withKey("id", "int8").withColumn("name", "text");
const AUDIT = Table.create(2, "audit", "log").withColumn("name", "text");

/**
 * Upper-cases `name`, routes `audit.*` to two sinks, drops truncates, fails
 * messages, turns `name = raw` into a raw message and `name = boom` into an
 * exception.
 */
class Sample extends Transform {
  constructor(config) {
    super();
    config.checkKeys("suffix", "limit");
    this.suffix = config.get("suffix", "");
    this.limit = config.int("limit", 10, { min: 1 });
  }

  process(event) {
    if (event.op === "truncate") return Outcome.DROP;
    if (event.op === "message") return Outcome.fail("no messages");
    const name = event.text("name");
    if (name === "boom") throw new RangeError("boom");
    if (name === "raw") {
      count("raw");
      return Outcome.emit(emitRaw("body", { key: "k", headers: [["h", "v"]], to: sink("s") }));
    }
    if (name !== undefined) event.set("name", name.toUpperCase() + this.suffix);
    if (name === "bad-emit") return Outcome.emit(sink("not an emit"));
    if (event.isTable("audit.*")) return Outcome.route("audit", sink("archive", "{table}"));
    return Outcome.KEEP;
  }
}

function harness(config) {
  const h = new TransformHarness(Sample, config);
  h.announce(PEOPLE, AUDIT);
  return h;
}

test("keep without changes is a plain keep", () => {
  const h = harness();
  assert.deepEqual(h.processOne(insert(PEOPLE, { id: 1 })), KEEP);
  assert.deepEqual(h.processOne(del(PEOPLE, { id: 1 })), KEEP);
});

test("changes are delivered by name", () => {
  const h = harness({ suffix: "!" });
  const out = h.processOne(update(PEOPLE, { id: 1 }, { id: 1, name: "ada" }));
  assert.deepEqual(emittedRows(PEOPLE, out), [{ id: Value.int(1), name: Value.text("ADA!") }]);
  assert.equal(emits(out)[0].destination, undefined);
});

test("route sends a copy to each sink", () => {
  const h = harness();
  const out = h.processOne(insert(AUDIT, { name: "bob" }));
  assert.deepEqual(
    emits(out).map((e) => e.destination),
    [sink("audit"), sink("archive", "{table}")],
  );
  const changes = emittedChanges(out);
  assert.deepEqual(changes.map((c) => c.after), [[Value.text("BOB")], [Value.text("BOB")]]);
  assert.notEqual(changes[0].after, changes[1].after);
});

test("drop, fail, raw messages and exceptions", () => {
  const h = harness();
  const out = h.process([
    truncate(PEOPLE),
    message("p", "x"),
    insert(PEOPLE, { id: 2, name: "raw" }),
    insert(PEOPLE, { id: 3, name: "boom" }),
    insert(PEOPLE, { id: 4, name: "bad-emit" }),
  ]);
  assert.deepEqual(out[0], DROP);
  assert.deepEqual(failure(out[1]), { message: "no messages", retryable: false });
  const [raw] = emits(out[2]);
  assert.equal(raw.destination.sink, "s");
  const te = new TextEncoder();
  assert.deepEqual(raw.payload.val, { key: te.encode("k"), value: te.encode("body"), headers: [["h", te.encode("v")]] });
  assert.deepEqual(h.counters, { raw: 1n });
  assert.equal(failure(out[3]).message, "RangeError: boom");
  assert.match(failure(out[4]).message, /Outcome.emit takes emits/);
});

test("configuration mistakes refuse the plugin", () => {
  assert.throws(() => new TransformHarness(Sample, { sufix: "!" }), { name: "InitError", message: /unknown config key `sufix`/ });
  assert.throws(() => new TransformHarness(Sample, { limit: "ten" }), InitError);
  assert.throws(
    () => new TransformHarness(Sample, [["limit", "5"], ["limit", "0"]]),
    { message: "config key `limit`: 0 is below the minimum 1" },
  );
});

test("unannounced tables and new versions", () => {
  const h = harness();
  const ghost = Table.create(99, "public", "ghost").withColumn("name", "text");
  assert.deepEqual(h.processOne(insert(ghost, { name: "x" })), KEEP);
  const v2 = Table.create(1, "public", "people", { version: 2 }).withColumn("nick", "text");
  h.announce(v2);
  assert.deepEqual(h.processOne(insert(v2, { nick: "ada" })), KEEP);
});

test("returning something else, or misusing the event, fails the event", () => {
  class Forgetful extends Transform {
    process(event) {
      event.set("name", "x");
    }
  }
  const h = new TransformHarness(Forgetful);
  h.announce(PEOPLE);
  assert.match(failure(h.processOne(insert(PEOPLE, { id: 1 }))).message, /not an Outcome/);
  assert.equal(failure(h.processOne(del(PEOPLE, { id: 1 }))).message, "a delete event has no new row");
});

test("the commit hook is asked for when defined", () => {
  class Batching extends Transform {
    seen = 0;
    process() {
      this.seen += 1;
      return Outcome.DROP;
    }
    commit(txn) {
      log.info(`txn ${txn.xid}: ${this.seen}`);
      return [emitRaw(String(this.seen))];
    }
  }
  assert.equal(harness().wantsCommit, false);
  assert.throws(() => harness().commit(), /did not ask for the commit hook/);
  const h = new TransformHarness(Batching);
  h.announce(PEOPLE);
  assert.equal(h.wantsCommit, true);
  h.process([insert(PEOPLE, { id: 1 }), read(PEOPLE, { id: 2 })]);
  const [raw] = h.commit();
  assert.deepEqual(raw.payload.val.value, new TextEncoder().encode("2"));
  assert.deepEqual(h.logs, [["info", "txn 700: 2"]]);
});

test("declareTable returns stable ids", () => {
  const ids = [];
  class Declares extends Transform {
    constructor() {
      super();
      ids.push(declareTable("public", "extra", [["id", "int8", true]]));
      ids.push(declareTable("public", "extra", [{ name: "id", typeName: "int8", key: true }]));
    }
  }
  const h = new TransformHarness(Declares);
  assert.equal(ids[0], ids[1]);
  assert.deepEqual(h.host.declared, [["public", "extra", [["id", "int8", true]]]]);
});

test("event accessors", () => {
  const seen = [];
  class Spy extends Transform {
    process(e) {
      seen.push([e.op, e.schema, e.tableName, e.after("name"), e.before("id"), e.value("id"), e.after("nope"), e.afterColumns(), e.message]);
      return Outcome.KEEP;
    }
  }
  const h = new TransformHarness(Spy);
  h.announce(PEOPLE);
  h.process([update(PEOPLE, { id: 1 }, { id: 1, name: UNCHANGED }), message("m", "hi")]);
  assert.deepEqual(seen[0], [
    "update", "public", "people", UNCHANGED, Value.int(1), Value.int(1), undefined,
    [["id", Value.int(1)], ["name", UNCHANGED]], undefined,
  ]);
  assert.deepEqual(seen[1].slice(0, 4), ["message", undefined, undefined, undefined]);
  assert.deepEqual(seen[1][8].content, new TextEncoder().encode("hi"));
});

test("routers route each change", () => {
  class Routes extends Router {
    constructor(config) {
      super();
      this.fallback = config.list("default");
    }
    route(e) {
      return e.tableName === undefined ? this.fallback : [sink(e.tableName, "{schema}.{table}")];
    }
  }
  const h = new RouterHarness(Routes, { default: "a, ,b" });
  h.announce(PEOPLE);
  assert.deepEqual(h.route([insert(PEOPLE, { id: 1 }), message("m", "")]), [
    [sink("people", "{schema}.{table}")],
    [sink("a"), sink("b")],
  ]);
});

test("plain values become contract values", () => {
  assert.equal(value(null), NULL);
  assert.deepEqual(value(true), Value.boolean(true));
  assert.deepEqual(value(3), { tag: "int", val: 3n });
  assert.deepEqual(value(1.5), { tag: "float", val: 1.5 });
  assert.deepEqual(value("a"), { tag: "text", val: "a" });
  assert.deepEqual(value(new Uint8Array([10])), { tag: "bytes", val: new Uint8Array([10]) });
  assert.deepEqual(value(Value.json("{}")), Value.json("{}"));
  assert.throws(() => value(1n << 63n), /64-bit/);
  assert.throws(() => value({}), TypeError);
});

test("reading values", () => {
  assert.equal(asStr(Value.json("[]")), "[]");
  assert.equal(asStr(Value.int(1)), undefined);
  assert.equal(asNumber(Value.numeric("1.50")), 1.5);
  assert.equal(asNumber(Value.numeric("abc")), undefined);
  assert.equal(toText(Value.bytes([0x0a, 0xff])), "\\x0aff");
  assert.equal(toText(Value.boolean(false)), "false");
  assert.equal(toText(Value.int(-4)), "-4");
  assert.equal(toText(UNCHANGED), undefined);
});

test("config getters", () => {
  const c = new Config([["tables", " a, ,b "], ["flag", "Yes"], ["ratio", "0.5"], ["route.x", "k"]]);
  assert.deepEqual(c.list("tables"), ["a", "b"]);
  assert.deepEqual(c.list("missing", ["d"]), ["d"]);
  assert.equal(c.bool("flag"), true);
  assert.equal(c.float("ratio", undefined, { max: 1 }), 0.5);
  assert.deepEqual(c.withPrefix("route."), [["x", "k"]]);
  assert.equal(c.choice("mode", ["a", "b"], "a"), "a");
  c.checkKeys("tables", "flag", "ratio", "route.");
  assert.throws(() => c.require("nope"), new ConfigError("missing required config key `nope`"));
  assert.throws(() => c.choice("flag", ["x", "y"]), /`flag`: expected one of x, y/);
  assert.throws(() => c.bool("tables"), /`tables`: expected true or false/);
  assert.throws(() => c.int("ratio"), /`ratio`: expected an integer/);
});

test("host functions need a host", () => {
  assert.throws(() => count("x", -1), /must not be negative/);
  // As in a fresh process: no harness has bound its host yet.
  bindHost(undefined);
  assert.throws(() => log.info("outside any harness"), /only available inside a component/);
});
