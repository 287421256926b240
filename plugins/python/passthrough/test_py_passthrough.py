"""Unit tests of py_passthrough, natively: `python3 -m unittest`."""

import unittest

from weir_plugin import Table
from weir_plugin.testing import KEEP, InitError, TransformHarness, delete, insert, message, truncate

from py_passthrough import Passthrough

T = Table.new(1, "public", "t").with_key("id", "int8").with_column("v", "text")


class PassthroughTests(unittest.TestCase):
    def test_keeps_everything(self):
        h = TransformHarness(Passthrough)
        h.announce(T)
        out = h.process(
            [
                insert(T, id=1, v="a"),
                delete(T, {"id": 1}),
                truncate(T),
                message("m", b"hi"),
            ]
        )
        self.assertEqual(out, [KEEP] * 4)

    def test_takes_no_configuration(self):
        with self.assertRaisesRegex(InitError, "unknown config key `v`"):
            TransformHarness(Passthrough, {"v": "1"})


if __name__ == "__main__":
    unittest.main()
