"""Unit-testing plugins in plain CPython, without WebAssembly.

The harnesses drive a plugin through the very `WitWorld` class the
component exports: `init` (reading the configuration from the host),
`on-table` for each announced table, then batches of changes built with
`insert`, `update`, `delete`, `truncate`, `read` and `message`. A native host
stands in for Weir's and records counters, log lines and declared tables::

    import unittest
    from weir_plugin import Table, Text
    from weir_plugin.testing import TransformHarness, KEEP, insert, emitted_rows

    USERS = Table.new(1, "public", "users").with_key("id", "int8").with_column("email", "text")

    class Test(unittest.TestCase):
        def test_lowercases(self):
            h = TransformHarness(Lowercase, {"columns": "email"})
            h.announce(USERS)
            out = h.process_one(insert(USERS, id=1, email="A@B.C"))
            self.assertEqual(emitted_rows(USERS, out)[0]["email"], Text("a@b.c"))
"""

from __future__ import annotations

import sys

from . import (
    Change,
    Column,
    Config,
    LogicalMessage,
    Op,
    Source,
    Table,
    Transaction,
    _install_host,
    _wit,
    export_router,
    export_transform,
    value,
)

#: What a plain keep looks like from the host's side.
KEEP = _wit.Outcome_Keep()
#: What a drop looks like from the host's side.
DROP = _wit.Outcome_Drop()
Err = _wit.Err


class InitError(Exception):
    """The plugin refused its configuration; `str()` is its message."""


class NativeHost:
    """Weir's host functions, natively: records what the plugin does.

    Attributes: `config` (the pairs `host.config()` returns), `counters`
    (`{name: total}`), `logs` (`[(Level, message)]`), `declared`
    (`[(schema, name, columns)]`, the id of each is its index + 100000).
    """

    def __init__(self, config=(), echo_logs: bool = False):
        self._config = Config(config).items()
        self.counters = {}
        self.logs = []
        self.declared = []
        self.echo_logs = echo_logs

    def config(self):
        return list(self._config)

    def count(self, name, delta):
        if not 0 <= delta < 1 << 64:
            raise OverflowError(f"counter delta {delta} is not a u64")
        self.counters[name] = self.counters.get(name, 0) + delta

    def log(self, level, message):
        self.logs.append((level, message))
        if self.echo_logs:
            print(f"[{level.name.lower()}] {message}", file=sys.stderr)

    def declare_table(self, schema, name, columns):
        key = (schema, name, [(c.name, c.type_name, c.key) for c in columns])
        if key in self.declared:
            return 100_000 + self.declared.index(key)
        self.declared.append(key)
        return 100_000 + len(self.declared) - 1


class _Harness:
    def __init__(self, exported, config, echo_logs):
        self.host = NativeHost(config or (), echo_logs)
        self.world = exported()
        self._use()
        try:
            self.hooks = self.world.init()
        except _wit.Err as e:
            raise InitError(e.value) from None

    def _use(self):
        # Installed on every call, so two harnesses in one test stay apart.
        _install_host(self.host)

    @property
    def plugin(self):
        """The plugin object `init` made."""
        return self.world.runtime.plugin

    @property
    def counters(self) -> dict:
        """Counter totals, `{name: total}`."""
        return self.host.counters

    @property
    def logs(self) -> list:
        """Log lines, `[(Level, message)]`."""
        return self.host.logs

    def announce(self, *tables: Table) -> None:
        """Announces tables (`on-table`), as the host does before their
        first change and again after each schema change."""
        self._use()
        for table in tables:
            self.world.on_table(table.raw)


class TransformHarness(_Harness):
    """Runs a `Transform` subclass as the host would.

    `config` is a dict or a list of pairs; `InitError` when the plugin
    refuses it.
    """

    def __init__(self, plugin_class, config=None, echo_logs: bool = False):
        super().__init__(export_transform(plugin_class), config, echo_logs)

    @property
    def wants_commit(self) -> bool:
        """Whether `init` asked for the commit hook."""
        return bool(self.hooks & _wit.Hooks.COMMIT)

    def process(self, batch) -> list:
        """Processes a batch: one contract outcome per change."""
        self._use()
        batch = list(batch)
        out = self.world.process(batch)
        if len(out) != len(batch):
            raise AssertionError(f"{len(out)} outcomes for {len(batch)} changes")
        return out

    def process_one(self, change: Change):
        """Processes a batch of one change."""
        return self.process([change])[0]

    def commit(self, txn: Transaction | None = None) -> list:
        """The `commit` hook, as the host calls it after a transaction's
        last change; only for plugins that asked for it."""
        if not self.wants_commit:
            raise AssertionError("the plugin did not ask for the commit hook")
        self._use()
        return self.world.commit(txn or transaction())


class RouterHarness(_Harness):
    """Runs a `Router` subclass as the host would."""

    def __init__(self, plugin_class, config=None, echo_logs: bool = False):
        super().__init__(export_router(plugin_class), config, echo_logs)

    def route(self, batch) -> list:
        """Routes a batch: one list of destinations per change."""
        self._use()
        batch = list(batch)
        out = self.world.route(batch)
        if len(out) != len(batch):
            raise AssertionError(f"{len(out)} routes for {len(batch)} changes")
        return out

    def route_one(self, change: Change) -> list:
        """Routes a batch of one change."""
        return self.route([change])[0]


# --- building changes -----------------------------------------------------


def source(seq: int = 0) -> Source:
    """A plausible WAL position."""
    return Source(commit_lsn=0x100, lsn=0x80, xid=700, commit_time_micros=0, seq=seq)


def transaction(xid: int = 700) -> Transaction:
    """The transaction `source()` belongs to."""
    return Transaction(xid=xid, commit_lsn=0x100, commit_time_micros=0)


def row(table: Table, values=None, **named) -> list:
    """A row of `table` with the given values (plain Python values or
    contract values) and every other column NULL."""
    merged = dict(values or {}, **named)
    out = [value(None)] * len(table.columns)
    for name, v in merged.items():
        i = table.column_index(name)
        if i is None:
            raise ValueError(f"table {table.qualified_name} has no column `{name}`")
        out[i] = value(v)
    return out


def _change(op, table_id, before, after):
    return Change(op=op, table=table_id, before=before, after=after, message=None, source=source())


def insert(table: Table, values=None, **named) -> Change:
    """An INSERT of a row with the given values."""
    return _change(Op.INSERT, table.id, None, row(table, values, **named))


def read(table: Table, values=None, **named) -> Change:
    """A row read by an initial snapshot."""
    return _change(Op.READ, table.id, None, row(table, values, **named))


def update(table: Table, before, after) -> Change:
    """An UPDATE from `before` (often just the key) to `after` (dicts)."""
    return _change(Op.UPDATE, table.id, row(table, before), row(table, after))


def delete(table: Table, before) -> Change:
    """A DELETE of the row identified by `before` (a dict)."""
    return _change(Op.DELETE, table.id, row(table, before), None)


def truncate(table: Table) -> Change:
    """A TRUNCATE of `table`."""
    return _change(Op.TRUNCATE, table.id, None, None)


def message(prefix: str, content) -> Change:
    """A message written with `pg_logical_emit_message`."""
    if isinstance(content, str):
        content = content.encode()
    c = _change(Op.MESSAGE, 0, None, None)
    c.message = LogicalMessage(prefix, bytes(content))
    return c


# --- reading outcomes -----------------------------------------------------


def emits(outcome) -> list:
    """The emits of a `replace` outcome; empty for any other."""
    return list(outcome.value) if isinstance(outcome, _wit.Outcome_Replace) else []


def emitted_changes(outcome) -> list:
    """The changes an outcome delivers instead of the event."""
    return [e.payload.value for e in emits(outcome) if isinstance(e.payload, _wit.Payload_Change)]


def emitted_rows(table: Table, outcome, which: str = "after") -> list:
    """The `after` (or `before`) rows of the emitted changes, as
    `{column: value}` dicts."""
    rows = [getattr(c, which) for c in emitted_changes(outcome)]
    return [table.row_dict(r) for r in rows if r is not None]


def failure(outcome):
    """The `Failure` (`message`, `retryable`) of a failed outcome, else
    `None`."""
    return outcome.value if isinstance(outcome, _wit.Outcome_Fail) else None


__all__ = [
    "Column", "DROP", "InitError", "KEEP", "NativeHost", "RouterHarness",
    "TransformHarness", "delete", "emits", "emitted_changes", "emitted_rows",
    "failure", "insert", "message", "read", "row", "source", "transaction",
    "truncate", "update",
]
