"""Tests of the helper module and its native harness.

Run from plugins/python: `python3 -m unittest discover -s tests`.
"""

import dataclasses
import enum
import importlib
import os
import sys
import unittest

from weir_plugin import (
    NULL,
    UNCHANGED,
    Boolean,
    Bytes,
    Config,
    ConfigError,
    Float,
    Int,
    Json,
    Level,
    Numeric,
    Op,
    Outcome,
    Router,
    Table,
    Text,
    Transform,
    _wit,
    as_float,
    as_str,
    count,
    declare_table,
    emit_raw,
    log,
    sink,
    to_text,
    value,
)
from weir_plugin.testing import (
    DROP,
    KEEP,
    InitError,
    RouterHarness,
    TransformHarness,
    delete,
    emits,
    emitted_changes,
    emitted_rows,
    failure,
    insert,
    message,
    read,
    truncate,
    update,
)

PEOPLE = Table.new(1, "public", "people").with_key("id", "int8").with_column("name", "text")
AUDIT = Table.new(2, "audit", "log").with_column("name", "text")


class Sample(Transform):
    """Upper-cases `name`, routes `audit.*` to two sinks, drops truncates,
    fails messages, turns `name = raw` into a raw message and `name = boom`
    into an exception."""

    def __init__(self, config):
        config.check_keys("suffix", "limit")
        self.suffix = config.get("suffix", "")
        self.limit = config.int("limit", 10, min=1)

    def process(self, event):
        if event.op is Op.TRUNCATE:
            return Outcome.DROP
        if event.op is Op.MESSAGE:
            return Outcome.fail("no messages")
        name = event.text("name")
        if name == "boom":
            raise KeyError("boom")
        if name == "bad-emit":
            return Outcome.emit(sink("not an emit"))
        if name == "raw":
            count("raw")
            return Outcome.emit(emit_raw("body", key=b"k", headers=[("h", "v")], to=sink("s")))
        if name is not None:
            event.set("name", name.upper() + self.suffix)
        if event.is_table("audit.*"):
            return Outcome.route("audit", sink("archive", "{table}"))
        return Outcome.KEEP


class TransformTests(unittest.TestCase):
    def harness(self, config=None):
        h = TransformHarness(Sample, config)
        h.announce(PEOPLE, AUDIT)
        return h

    def test_keep_without_changes_is_a_plain_keep(self):
        h = self.harness()
        self.assertEqual(h.process_one(insert(PEOPLE, id=1)), KEEP)
        self.assertEqual(h.process_one(delete(PEOPLE, {"id": 1})), KEEP)

    def test_changes_are_delivered_by_name(self):
        h = self.harness({"suffix": "!"})
        out = h.process_one(update(PEOPLE, {"id": 1}, {"id": 1, "name": "ada"}))
        (row,) = emitted_rows(PEOPLE, out)
        self.assertEqual(row, {"id": Int(1), "name": Text("ADA!")})
        self.assertEqual(emits(out)[0].destination, None)

    def test_route_sends_a_copy_to_each_sink(self):
        h = self.harness()
        out = h.process_one(insert(AUDIT, name="bob"))
        targets = [(e.destination.sink, e.destination.topic) for e in emits(out)]
        self.assertEqual(targets, [("audit", None), ("archive", "{table}")])
        changes = emitted_changes(out)
        self.assertEqual([c.after for c in changes], [[Text("BOB")], [Text("BOB")]])
        self.assertIsNot(changes[0].after, changes[1].after)

    def test_drop_fail_raw_and_exceptions(self):
        h = self.harness()
        out = h.process(
            [
                truncate(PEOPLE),
                message("p", "x"),
                insert(PEOPLE, id=2, name="raw"),
                insert(PEOPLE, id=3, name="boom"),
                insert(PEOPLE, id=4, name="bad-emit"),
            ]
        )
        self.assertEqual(out[0], DROP)
        self.assertEqual(failure(out[1]).message, "no messages")
        self.assertFalse(failure(out[1]).retryable)
        (raw,) = emits(out[2])
        self.assertEqual(raw.destination.sink, "s")
        self.assertEqual(
            (raw.payload.value.key, raw.payload.value.value, raw.payload.value.headers),
            (b"k", b"body", [("h", b"v")]),
        )
        self.assertEqual(h.counters, {"raw": 1})
        self.assertEqual(failure(out[3]).message, "KeyError: 'boom'")
        self.assertIn("Outcome.emit takes Emits", failure(out[4]).message)

    def test_config_errors_refuse_the_plugin(self):
        with self.assertRaisesRegex(InitError, "unknown config key `sufix`"):
            TransformHarness(Sample, {"sufix": "!"})
        with self.assertRaisesRegex(InitError, "`limit`: expected an integer"):
            TransformHarness(Sample, {"limit": "ten"})
        with self.assertRaisesRegex(InitError, "`limit`: 0 is below the minimum 1"):
            TransformHarness(Sample, [("limit", "5"), ("limit", "0")])

    def test_unknown_tables_and_versions(self):
        h = self.harness()
        ghost = Table.new(99, "public", "ghost").with_column("name", "text")
        # Never announced: no table, so no columns by name, and nothing changes.
        self.assertEqual(h.process_one(insert(ghost, name="x")), KEEP)
        v2 = Table.new(1, "public", "people", version=2).with_column("nick", "text")
        h.announce(v2)
        self.assertEqual(h.process_one(insert(v2, nick="ada")), KEEP)

    def test_returning_something_else_fails_the_event(self):
        class Forgetful(Transform):
            def __init__(self, config):
                pass

            def process(self, event):
                event.set("name", "x")

        h = TransformHarness(Forgetful)
        h.announce(PEOPLE)
        self.assertIn("not an Outcome", failure(h.process_one(insert(PEOPLE, id=1))).message)
        self.assertIn("no new row", failure(h.process_one(delete(PEOPLE, {"id": 1}))).message)

    def test_commit_hook_is_asked_for_when_defined(self):
        class Batching(Transform):
            def __init__(self, config):
                self.seen = 0

            def process(self, event):
                self.seen += 1
                return Outcome.DROP

            def commit(self, txn):
                log.info(f"txn {txn.xid}: {self.seen}")
                return [emit_raw(str(self.seen))]

        self.assertFalse(self.harness().wants_commit)
        with self.assertRaises(AssertionError):
            self.harness().commit()
        h = TransformHarness(Batching)
        h.announce(PEOPLE)
        self.assertTrue(h.wants_commit)
        h.process([insert(PEOPLE, id=1), read(PEOPLE, id=2)])
        (raw,) = h.commit()
        self.assertEqual(raw.payload.value.value, b"2")
        self.assertEqual(h.logs, [(Level.INFO, "txn 700: 2")])

    def test_declare_table_returns_stable_ids(self):
        class Declares(Transform):
            def __init__(self, config):
                self.id = declare_table("public", "extra", [("id", "int8", True)])
                self.again = declare_table("public", "extra", [("id", "int8", True)])

            def process(self, event):
                return Outcome.KEEP

        h = TransformHarness(Declares)
        self.assertEqual(h.plugin.id, h.plugin.again)
        self.assertEqual(h.host.declared, [("public", "extra", [("id", "int8", True)])])

    def test_event_accessors(self):
        h = TransformHarness(Sample)
        h.announce(PEOPLE)
        seen = []

        class Spy(Transform):
            def __init__(self, config):
                pass

            def process(self, event):
                seen.append(
                    (
                        event.op,
                        event.schema,
                        event.table_name,
                        event.after("name"),
                        event.before("id"),
                        event.value("id"),
                        event.after("nope"),
                        list(event.after_columns()),
                        event.message,
                    )
                )
                return Outcome.KEEP

        spy = TransformHarness(Spy)
        spy.announce(PEOPLE)
        spy.process([update(PEOPLE, {"id": 1}, {"id": 1, "name": UNCHANGED}), message("m", b"hi")])
        self.assertEqual(
            seen[0],
            (
                Op.UPDATE,
                "public",
                "people",
                UNCHANGED,
                Int(1),
                Int(1),
                None,
                [("id", Int(1)), ("name", UNCHANGED)],
                None,
            ),
        )
        self.assertEqual(seen[1][:4], (Op.MESSAGE, None, None, None))
        self.assertEqual(seen[1][8].content, b"hi")


class Routes(Router):
    def __init__(self, config):
        self.default = config.list("default")

    def route(self, event):
        if event.table_name is None:
            return self.default
        return [sink(event.table_name, "{schema}.{table}")]


class RouterTests(unittest.TestCase):
    def test_routes_each_change(self):
        h = RouterHarness(Routes, {"default": "a, ,b"})
        h.announce(PEOPLE)
        out = h.route([insert(PEOPLE, id=1), message("m", "")])
        self.assertEqual(out[0], [sink("people", "{schema}.{table}")])
        self.assertEqual(out[1], [sink("a"), sink("b")])


class ValueAndConfigTests(unittest.TestCase):
    def test_plain_values_become_contract_values(self):
        self.assertEqual(value(None), NULL)
        self.assertEqual(value(True), Boolean(True))
        self.assertEqual(value(3), Int(3))
        self.assertEqual(value(1.5), Float(1.5))
        self.assertEqual(value("a"), Text("a"))
        self.assertEqual(value(bytearray(b"\x0a")), Bytes(b"\n"))
        self.assertEqual(value(Json("{}")), Json("{}"))
        with self.assertRaisesRegex(ValueError, "64-bit"):
            value(1 << 63)
        with self.assertRaisesRegex(TypeError, "dict"):
            value({})

    def test_reading_values(self):
        self.assertEqual(as_str(Json("[]")), "[]")
        self.assertIsNone(as_str(Int(1)))
        self.assertEqual(as_float(Numeric("1.50")), 1.5)
        self.assertIsNone(as_float(Numeric("abc")))
        self.assertEqual(to_text(Bytes(b"\x0a\xff")), "\\x0aff")
        self.assertEqual(to_text(Boolean(False)), "false")
        self.assertIsNone(to_text(UNCHANGED))

    def test_config_getters(self):
        c = Config([("tables", " a, ,b "), ("flag", "Yes"), ("ratio", "0.5"), ("route.x", "k")])
        self.assertEqual(c.list("tables"), ["a", "b"])
        self.assertEqual(c.list("missing", ["d"]), ["d"])
        self.assertTrue(c.bool("flag"))
        self.assertEqual(c.float("ratio", max=1), 0.5)
        self.assertEqual(c.with_prefix("route."), [("x", "k")])
        self.assertEqual(c.choice("mode", ("a", "b"), "a"), "a")
        c.check_keys("tables", "flag", "ratio", "route.")
        with self.assertRaisesRegex(ConfigError, "missing required config key `nope`"):
            c.require("nope")
        with self.assertRaisesRegex(ConfigError, "`flag`: expected one of x, y"):
            c.choice("flag", ("x", "y"))
        with self.assertRaisesRegex(ConfigError, "`tables`: expected true or false"):
            c.bool("tables")

    def test_host_functions_need_a_host(self):
        with self.assertRaisesRegex(ValueError, "must not be negative"):
            count("x", -1)
        import weir_plugin

        # As in a fresh process: no harness has installed its host yet.
        weir_plugin._install_host(weir_plugin._NoHost())
        with self.assertRaisesRegex(RuntimeError, "only available inside a component"):
            log.info("outside any harness")


@unittest.skipUnless(
    os.environ.get("WEIR_PY_BINDINGS"),
    "set WEIR_PY_BINDINGS to a `componentize-py bindings` output to compare",
)
class MirrorTests(unittest.TestCase):
    """The native stand-ins must match what componentize-py generates."""

    def test_native_types_match_generated_bindings(self):
        sys.path.insert(0, os.environ["WEIR_PY_BINDINGS"])
        try:
            generated = importlib.import_module("wit_world.imports.types")
            host = importlib.import_module("wit_world.imports.host")
        finally:
            sys.path.pop(0)
        pairs = [(name, cls, getattr(generated, name, None)) for name, cls in _wit.MIRRORED_TYPES.items()]
        pairs.append(("Level", _wit.Level, host.Level))
        for name, native, gen in pairs:
            with self.subTest(name):
                self.assertIsNotNone(gen, f"{name} is not generated any more")
                if isinstance(native, enum.EnumMeta):
                    self.assertEqual(
                        [(m.name, m.value) for m in native], [(m.name, m.value) for m in gen]
                    )
                else:
                    self.assertEqual(
                        [f.name for f in dataclasses.fields(native)],
                        [f.name for f in dataclasses.fields(gen)],
                    )
        value_cases = [n for n in dir(generated) if n.startswith("Value_")]
        self.assertEqual(sorted(value_cases), sorted(c.__name__ for c in _wit.VALUE_TYPES))
        for fn in ("log", "config", "count", "declare_table"):
            self.assertTrue(callable(getattr(host, fn, None)), fn)


if __name__ == "__main__":
    unittest.main()
