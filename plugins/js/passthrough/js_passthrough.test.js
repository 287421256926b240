// Unit tests of js_passthrough, natively: `node --test` in plugins/js.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Table } from "../weir_plugin/index.js";
import { KEEP, TransformHarness, del, insert, message, truncate } from "../weir_plugin/testing.js";
import Passthrough from "./js_passthrough.js";

const T = Table.create(1, "public", "t").withKey("id", "int8").withColumn("v", "text");

test("keeps everything", () => {
  const h = new TransformHarness(Passthrough);
  h.announce(T);
  const out = h.process([insert(T, { id: 1, v: "a" }), del(T, { id: 1 }), truncate(T), message("m", "hi")]);
  assert.deepEqual(out, [KEEP, KEEP, KEEP, KEEP]);
});

test("takes no configuration", () => {
  assert.throws(() => new TransformHarness(Passthrough, { v: "1" }), /unknown config key `v`/);
});
