// Unit tests of {{name}}, natively: `node --test`.

import { test } from "node:test";
import assert from "node:assert/strict";

import { NULL, Table, UNCHANGED, Value } from "./weir_plugin/index.js";
import { KEEP, TransformHarness, del, emittedRows, insert, update } from "./weir_plugin/testing.js";
import MaskTail from "./plugin.js";

const USERS = Table.create(16384, "public", "users").withKey("id", "int8").withColumn("phone", "text");

function harness(config) {
  const h = new TransformHarness(MaskTail, config);
  h.announce(USERS);
  return h;
}

test("masks all but the tail", () => {
  const h = harness();
  const out = h.processOne(insert(USERS, { id: 1, phone: "+1 555 0100" }));
  assert.deepEqual(emittedRows(USERS, out), [{ id: Value.int(1), phone: Value.text("*******0100") }]);
  assert.deepEqual(h.counters, { masked: 1n });
});

test("old rows too", () => {
  const h = harness({ visible: "2" });
  const out = h.processOne(del(USERS, { id: 1, phone: "12345" }));
  assert.deepEqual(emittedRows(USERS, out, "before")[0].phone, Value.text("***45"));
});

test("leaves what has nothing to hide", () => {
  const h = harness();
  assert.deepEqual(h.processOne(insert(USERS, { id: 1, phone: "0100" })), KEEP);
  assert.deepEqual(h.processOne(insert(USERS, { id: 2, phone: NULL })), KEEP);
  assert.deepEqual(h.processOne(update(USERS, { id: 3 }, { id: 3, phone: UNCHANGED })), KEEP);
  assert.deepEqual(h.counters, {});
});

test("configuration mistakes", () => {
  assert.throws(() => new TransformHarness(MaskTail, { visible: "all" }), /`visible`: expected an integer/);
  assert.throws(() => new TransformHarness(MaskTail, { colum: "phone" }), /unknown config key `colum`/);
});
