"""Unit tests of {{name}}, natively: `python3 -m unittest`."""

import unittest

from weir_plugin import NULL, UNCHANGED, Int, Table, Text
from weir_plugin.testing import KEEP, InitError, TransformHarness, delete, emitted_rows, insert, update

from plugin import MaskTail

USERS = Table.new(16384, "public", "users").with_key("id", "int8").with_column("phone", "text")


class MaskTailTests(unittest.TestCase):
    def harness(self, config=None):
        h = TransformHarness(MaskTail, config)
        h.announce(USERS)
        return h

    def test_masks_all_but_the_tail(self):
        h = self.harness()
        out = h.process_one(insert(USERS, id=1, phone="+1 555 0100"))
        self.assertEqual(emitted_rows(USERS, out), [{"id": Int(1), "phone": Text("*******0100")}])
        self.assertEqual(h.counters, {"masked": 1})

    def test_old_rows_too(self):
        h = self.harness({"visible": "2"})
        out = h.process_one(delete(USERS, {"id": 1, "phone": "12345"}))
        self.assertEqual(emitted_rows(USERS, out, "before")[0]["phone"], Text("***45"))

    def test_leaves_what_has_nothing_to_hide(self):
        h = self.harness()
        self.assertEqual(h.process_one(insert(USERS, id=1, phone="0100")), KEEP)
        self.assertEqual(h.process_one(insert(USERS, id=2, phone=NULL)), KEEP)
        self.assertEqual(h.process_one(update(USERS, {"id": 3}, {"id": 3, "phone": UNCHANGED})), KEEP)
        self.assertEqual(h.counters, {})

    def test_configuration_mistakes(self):
        with self.assertRaisesRegex(InitError, "`visible`: expected an integer"):
            TransformHarness(MaskTail, {"visible": "all"})
        with self.assertRaisesRegex(InitError, "unknown config key `colum`"):
            TransformHarness(MaskTail, {"colum": "phone"})


if __name__ == "__main__":
    unittest.main()
