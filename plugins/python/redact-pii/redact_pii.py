"""A Weir transform that redacts email addresses and payment card numbers
found in text and JSON values, in both the new and the old row.

Configuration:

* `columns`: comma-separated column names to scan; absent: every column.
* `tables`: comma-separated `schema.table` names (`schema.*` for a whole
  schema) whose events are scanned; absent: every table. Events of other
  tables, and logical messages, are kept as they are.
* `replacement`: what replaces each finding; default `[redacted]`.

A card number is a run of 13 to 19 digits, optionally grouped by single
spaces or dashes, that passes the Luhn check: order numbers and phone
numbers of the same length almost never do. When a longer run of digit
groups fails the check, its longest leading or trailing groups that pass are
redacted (a card number followed by an expiry such as `12 27`).

JSON values are scanned token by token, so their layout stays as it was: a
finding inside a string is replaced in place, and a bare JSON number that is
a card number becomes the replacement as a JSON string. NULLs, non-text
values and TOASTed values the UPDATE did not send are left alone.

Each batch adds the number of findings to the counter `redacted`.
"""

import json
import re

from weir_plugin import (
    ConfigError,
    Json,
    Outcome,
    Text,
    Transform,
    count,
    export_transform,
)

EMAIL = re.compile(
    r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
)
# At least 13 digits in groups joined by one space or dash; maximal, because
# the match only starts at a run's first digit and is greedy.
DIGIT_RUN = re.compile(r"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}(?![0-9])")
GROUP = re.compile(r"[0-9]+")
# A JSON string literal, or a JSON number.
JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?')


def luhn(digits: str) -> bool:
    """Whether `digits` passes the Luhn (mod 10) check."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def is_card(digits: str) -> bool:
    """Whether `digits` (digits only) looks like a payment card number."""
    return 13 <= len(digits) <= 19 and luhn(digits)


class Redactor:
    """Finds and replaces emails and card numbers in text and JSON text."""

    def __init__(self, replacement: str):
        self.replacement = replacement
        # Inside a JSON string the replacement must be escaped to keep the
        # document valid (a configured `"` or `\`).
        self.json_replacement = json.dumps(replacement)[1:-1]

    def text(self, s: str, replacement=None):
        """`(redacted text, findings)`."""
        replacement = self.replacement if replacement is None else replacement
        found = 0
        if "@" in s:
            s, found = EMAIL.subn(replacement, s)
        if len(s) >= 13:
            hits = []

            def card(m):
                out = self._card_run(m.group(), replacement)
                if out is not None:
                    hits.append(1)
                    return out
                return m.group()

            s = DIGIT_RUN.sub(card, s)
            found += len(hits)
        return s, found

    @staticmethod
    def _card_run(run: str, replacement: str):
        """The run with its card number replaced, or `None` without one."""
        if is_card(run.replace(" ", "").replace("-", "")):
            return replacement
        # Grouped runs: try the longest leading, then trailing, groups.
        groups = [(m.start(), m.end(), m.group()) for m in GROUP.finditer(run)]
        if len(groups) < 2:
            return None
        for size in range(len(groups) - 1, 0, -1):
            for first in (0, len(groups) - size):
                chosen = groups[first : first + size]
                if is_card("".join(g for _, _, g in chosen)):
                    start, end = chosen[0][0], chosen[-1][1]
                    return run[:start] + replacement + run[end:]
        return None

    def json(self, s: str):
        """`(redacted JSON text, findings)`, layout preserved."""
        found = 0

        def token(m):
            nonlocal found
            tok = m.group()
            if tok[0] == '"':
                inner, n = self.text(tok[1:-1], self.json_replacement)
                if n:
                    found += n
                    return f'"{inner}"'
                return tok
            if tok.isdigit() and is_card(tok):
                found += 1
                return f'"{self.json_replacement}"'
            return tok

        # Most documents hold nothing to redact: find that out at C speed.
        if not (("@" in s and EMAIL.search(s)) or DIGIT_RUN.search(s)):
            return s, 0
        return JSON_TOKEN.sub(token, s), found


class RedactPii(Transform):
    """Redacts emails and card numbers in the configured columns."""

    def __init__(self, config):
        config.check_keys("columns", "tables", "replacement")
        self.columns = config.list("columns") or None
        self.tables = config.list("tables")
        for name in self.tables:
            if name != "*" and "." not in name:
                raise ConfigError(f"config key `tables`: expected schema.table, got {name!r}")
        self.redactor = Redactor(config.get("replacement", "[redacted]"))
        # Table id -> names of the columns to scan (empty: leave alone),
        # rebuilt whenever a new version of the table is announced.
        self.targets = {}

    def on_table(self, table):
        wanted = not self.tables or any(table.matches(t) for t in self.tables)
        if not wanted:
            names = []
        elif self.columns is None:
            names = table.column_names
        else:
            names = [c for c in self.columns if table.column_index(c) is not None]
        self.targets[table.id] = names

    def process(self, event):
        if event.table is None:
            return Outcome.KEEP
        names = self.targets.get(event.table.id)
        if not names:
            return Outcome.KEEP
        found = 0
        for name in names:
            found += self._scan(event, name, event.after(name), event.set)
            found += self._scan(event, name, event.before(name), event.set_before)
        if found:
            count("redacted", found)
        return Outcome.KEEP

    def _scan(self, event, name, value, setter):
        if isinstance(value, Text):
            new, found = self.redactor.text(value.value)
            if found:
                setter(name, Text(new))
            return found
        if isinstance(value, Json):
            new, found = self.redactor.json(value.value)
            if found:
                setter(name, Json(new))
            return found
        return 0


WitWorld = export_transform(RedactPii)
