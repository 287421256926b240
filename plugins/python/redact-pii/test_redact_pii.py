"""Unit tests of redact_pii, natively: `python3 -m unittest` in this
directory, with plugins/python on PYTHONPATH."""

import json
import unittest

from weir_plugin import NULL, UNCHANGED, Int, Json, Table, Text
from weir_plugin.testing import (
    KEEP,
    InitError,
    TransformHarness,
    delete,
    emitted_rows,
    insert,
    message,
    truncate,
    update,
)

from redact_pii import RedactPii, Redactor, is_card, luhn

USERS = (
    Table.new(10, "public", "users")
    .with_key("id", "int8")
    .with_column("email", "text")
    .with_column("note", "text")
    .with_column("profile", "jsonb")
)
AUDIT = Table.new(11, "audit", "events").with_key("id", "int8").with_column("body", "text")

VISA = "4111 1111 1111 1111"
AMEX = "378282246310005"
VISA13 = "4222222222222"


def redact(text, replacement="[redacted]"):
    return Redactor(replacement).text(text)


class DetectionTests(unittest.TestCase):
    def test_luhn(self):
        self.assertTrue(luhn("79927398713"))
        self.assertFalse(luhn("79927398710"))
        self.assertTrue(is_card("4111111111111111"))
        self.assertFalse(is_card("4111111111111112"))
        self.assertFalse(is_card("0" * 12))  # passes Luhn, too short
        self.assertFalse(is_card("0" * 20))  # passes Luhn, too long

    def test_emails(self):
        self.assertEqual(
            redact("mail ada@example.com or bob.o'neil+x@mail.co.uk."),
            ("mail [redacted] or [redacted].", 2),
        )
        self.assertEqual(redact("not@an-address, @handle, a@b"), ("not@an-address, @handle, a@b", 0))

    def test_cards_grouped_or_not(self):
        self.assertEqual(redact(f"card {VISA} ok"), ("card [redacted] ok", 1))
        self.assertEqual(redact("5555-5555-5555-4444"), ("[redacted]", 1))
        self.assertEqual(redact(f"{AMEX},{VISA13}"), ("[redacted],[redacted]", 2))
        self.assertEqual(redact("x4111111111111111y"), ("x[redacted]y", 1))

    def test_numbers_that_are_not_cards_stay(self):
        for text in (
            "4111 1111 1111 1112",  # fails Luhn
            "order 2024-01-15 #123456",
            "+1-555-123-4567",
            "41111111111111111111111",  # 23 digits
            "4111  1111  1111  1111",  # double spaces: separate short runs
        ):
            with self.subTest(text):
                self.assertEqual(redact(text), (text, 0))

    def test_card_followed_by_expiry(self):
        self.assertEqual(redact(f"{VISA} 12 27"), ("[redacted] 12 27", 1))
        self.assertEqual(redact(f"cvc 123 {VISA}"), ("cvc 123 [redacted]", 1))

    def test_json_keeps_layout_and_validity(self):
        r = Redactor('say "no"')
        doc = '{"email": "ada@example.com", "card": 4111111111111111, "n": 42, "tags": ["x"]}'
        out, found = r.json(doc)
        self.assertEqual(found, 2)
        self.assertEqual(
            json.loads(out),
            {"email": 'say "no"', "card": 'say "no"', "n": 42, "tags": ["x"]},
        )
        self.assertEqual(out.count(", "), doc.count(", "))
        plain = '{"a": [1, 2.5, "b"]}'
        self.assertEqual(r.json(plain), (plain, 0))


class PluginTests(unittest.TestCase):
    def harness(self, config=None):
        h = TransformHarness(RedactPii, config)
        h.announce(USERS, AUDIT)
        return h

    def test_redacts_every_text_and_json_column_by_default(self):
        h = self.harness()
        out = h.process_one(
            insert(
                USERS,
                id=1,
                email="ada@example.com",
                note=f"paid with {VISA}",
                profile=Json('{"backup": "ada@work.example"}'),
            )
        )
        (row,) = emitted_rows(USERS, out)
        self.assertEqual(row["email"], Text("[redacted]"))
        self.assertEqual(row["note"], Text("paid with [redacted]"))
        self.assertEqual(row["profile"], Json('{"backup": "[redacted]"}'))
        self.assertEqual(row["id"], Int(1))
        self.assertEqual(h.counters, {"redacted": 3})

    def test_old_rows_are_redacted_too(self):
        h = self.harness()
        out = h.process_one(
            update(USERS, {"id": 1, "email": "old@example.com"}, {"id": 1, "email": UNCHANGED})
        )
        (before,) = emitted_rows(USERS, out, "before")
        (after,) = emitted_rows(USERS, out)
        self.assertEqual(before["email"], Text("[redacted]"))
        self.assertEqual(after["email"], UNCHANGED)
        out = h.process_one(delete(USERS, {"id": 2, "note": "x@y.org"}))
        self.assertEqual(emitted_rows(USERS, out, "before")[0]["note"], Text("[redacted]"))

    def test_clean_events_stay_plain_keeps(self):
        h = self.harness()
        out = h.process(
            [
                insert(USERS, id=1, email="nobody", note=None),
                truncate(USERS),
                message("pii", b"ada@example.com"),
            ]
        )
        self.assertEqual(out, [KEEP] * 3)
        self.assertEqual(h.counters, {})

    def test_columns_tables_and_replacement(self):
        h = self.harness({"columns": "note, missing", "tables": "public.*", "replacement": "***"})
        out = h.process_one(insert(USERS, id=1, email="ada@example.com", note="ada@example.com"))
        (row,) = emitted_rows(USERS, out)
        self.assertEqual((row["email"], row["note"]), (Text("ada@example.com"), Text("***")))
        # Another schema: not scanned at all.
        self.assertEqual(h.process_one(insert(AUDIT, id=1, body="ada@example.com")), KEEP)

    def test_new_table_versions_are_honoured(self):
        h = self.harness({"columns": "body"})
        self.assertEqual(h.process_one(insert(USERS, id=1, email="a@b.co")), KEEP)
        v2 = USERS.with_version(2).with_column("body", "text")
        h.announce(v2)
        out = h.process_one(insert(v2, id=1, body="a@b.co", email=NULL))
        self.assertEqual(emitted_rows(v2, out)[0]["body"], Text("[redacted]"))

    def test_configuration_mistakes(self):
        with self.assertRaisesRegex(InitError, "unknown config key `column`"):
            TransformHarness(RedactPii, {"column": "email"})
        with self.assertRaisesRegex(InitError, "`tables`: expected schema.table"):
            TransformHarness(RedactPii, {"tables": "users"})


if __name__ == "__main__":
    unittest.main()
