// Unit tests of normalize, natively: `node --test` in plugins/js.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Table, UNCHANGED, Value } from "../weir_plugin/index.js";
import { DROP, InitError, KEEP, TransformHarness, del, emittedRows, insert, message, truncate, update } from "../weir_plugin/testing.js";
import Normalize from "./normalize.js";

const USERS = Table.create(5, "public", "users")
  .withKey("id", "int8")
  .withColumn("name", "text")
  .withColumn("email", "text")
  .withColumn("age", "int4");
const TAGS = Table.create(6, "public", "tags").withKey("id", "int8").withColumn("label", "text");

const CONFIG = { lowercase: "email", trim: "name,email", require: "email" };

function harness(config = CONFIG) {
  const h = new TransformHarness(Normalize, config);
  h.announce(USERS, TAGS);
  return h;
}

test("trims and lower-cases the configured columns only", () => {
  const h = harness();
  const out = h.processOne(insert(USERS, { id: 1, name: "  Ada Lovelace ", email: " Ada@Example.COM\n", age: 36 }));
  assert.deepEqual(emittedRows(USERS, out), [
    { id: Value.int(1), name: Value.text("Ada Lovelace"), email: Value.text("ada@example.com"), age: Value.int(36) },
  ]);
});

test("already tidy events stay plain keeps", () => {
  const h = harness();
  assert.deepEqual(h.processOne(insert(USERS, { id: 1, name: "Ada", email: "ada@example.com" })), KEEP);
  assert.deepEqual(h.processOne(insert(TAGS, { id: 1, label: "  Mixed Case  " })), KEEP);
});

test("old rows are normalised too", () => {
  const h = harness();
  const out = h.processOne(update(USERS, { id: 1, email: "ADA@X.ORG" }, { id: 1, email: "ada@x.org" }));
  assert.deepEqual(emittedRows(USERS, out, "before")[0].email, Value.text("ada@x.org"));
});

test("drops events whose required column is null or empty, and counts them", () => {
  const h = harness();
  const out = h.process([
    insert(USERS, { id: 1, name: "no email" }),
    insert(USERS, { id: 2, email: "   " }),
    update(USERS, { id: 3 }, { id: 3, email: UNCHANGED }),
    del(USERS, { id: 4 }),
    truncate(USERS),
    message("m", "x"),
    insert(TAGS, { id: 5 }),
  ]);
  assert.deepEqual(out, [DROP, DROP, KEEP, KEEP, KEEP, KEEP, KEEP]);
  assert.deepEqual(h.counters, { dropped: 2n });
});

test("only text values are touched", () => {
  const h = harness({ trim: "name" });
  const out = h.processOne(insert(USERS, { id: 1, name: Value.other(" x ") }));
  assert.deepEqual(out, KEEP);
});

test("a new table version is planned again", () => {
  const h = harness({ lowercase: "label" });
  const v2 = TAGS.withVersion(2).withColumn("extra", "text");
  h.announce(v2);
  const out = h.processOne(insert(v2, { id: 1, label: "HELLO", extra: "KEEP" }));
  assert.deepEqual(emittedRows(v2, out)[0], { id: Value.int(1), label: Value.text("hello"), extra: Value.text("KEEP") });
});

test("configuration mistakes", () => {
  assert.throws(() => new TransformHarness(Normalize, {}), { name: "InitError", message: /at least one of/ });
  assert.throws(() => new TransformHarness(Normalize, { lowercase: "email", trimm: "name" }), InitError);
});
