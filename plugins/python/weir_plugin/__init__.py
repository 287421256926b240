"""Write Weir transforms and routers in Python.

Weir hands plugins batches of committed changes whose rows are positional
value lists, and announces each table's columns once through `on-table`.
This module keeps those announcements so plugin code reads and writes
columns by name::

    from weir_plugin import Outcome, Transform, export_transform

    class DropTestAccounts(Transform):
        def __init__(self, config):
            self.domain = config.get("domain", "@test.invalid")

        def process(self, event):
            email = event.text("email")
            if email is not None and email.endswith(self.domain):
                return Outcome.DROP
            return Outcome.KEEP

    WitWorld = export_transform(DropTestAccounts)

componentize-py turns the module into a component (it looks for the
`WitWorld` class); `weir_plugin.testing` drives the same class natively, so
plugin logic is unit-tested with `python -m unittest`.

Values are the contract's `value` variant: `Text("a")`, `Int(1)`, `NULL`,
`UNCHANGED` and so on (the classes componentize-py generates, inside a
component). `event.set` also takes plain Python values (`str`, `int`,
`float`, `bool`, `bytes`, `None`).
"""

from __future__ import annotations

import copy
import sys

from . import _wit
from ._wit import (
    Change,
    Column,
    Destination,
    Emit,
    Failure,
    Level,
    LogicalMessage,
    Op,
    RawMessage,
    Source,
    Transaction,
)

__all__ = [
    "Boolean", "Bytes", "Change", "Column", "Config", "ConfigError", "Date",
    "Destination", "Emit", "Event", "Float", "Int", "Json", "Level", "LogicalMessage",
    "NULL", "Null", "Numeric", "Op", "Other", "Outcome", "PluginError", "RawMessage",
    "Router", "Source", "Table", "Text", "Time", "Timestamp", "Timestamptz",
    "Transaction", "Transform", "UNCHANGED", "Unchanged", "Uuid", "as_bool",
    "as_bytes", "as_float", "as_int", "as_str", "count", "declare_table",
    "emit_change", "emit_raw", "export_router", "export_transform", "is_null",
    "is_unchanged", "log", "sink", "to_text", "value",
]

# The `value` variant's cases, under their WIT names.
Null = _wit.Value_Null
Unchanged = _wit.Value_Unchanged
Boolean = _wit.Value_Boolean
Int = _wit.Value_Int
Float = _wit.Value_Float
Numeric = _wit.Value_Numeric
Text = _wit.Value_Text
Bytes = _wit.Value_Bytes
Date = _wit.Value_Date
Time = _wit.Value_Time
Timestamp = _wit.Value_Timestamp
Timestamptz = _wit.Value_Timestamptz
Uuid = _wit.Value_Uuid
Json = _wit.Value_Json
Other = _wit.Value_Other

#: SQL NULL.
NULL = Null()
#: A TOASTed value the UPDATE did not send: unknown to the plugin, not NULL.
UNCHANGED = Unchanged()

_VALUE_TYPES = _wit.VALUE_TYPES
_TEXT_TYPES = (Text, Numeric, Uuid, Json, Other)
_S64 = (-(1 << 63), (1 << 63) - 1)


class PluginError(Exception):
    """A plugin used an event wrongly (no such column, no such row).

    Raised from `process`, it fails that event with this message.
    """


class ConfigError(ValueError):
    """A configuration mistake; raised from a plugin's constructor it
    refuses the plugin with this message."""


# --- values ---------------------------------------------------------------


def value(x):
    """The contract value for `x`: values pass through; `None` is NULL,
    `bool` boolean, `int` int, `float` float, `str` text, `bytes` bytes."""
    if isinstance(x, _VALUE_TYPES):
        return x
    if x is None:
        return NULL
    if isinstance(x, bool):
        return Boolean(x)
    if isinstance(x, int):
        if not _S64[0] <= x <= _S64[1]:
            raise ValueError(f"{x} does not fit a 64-bit int value; use Numeric(str(x))")
        return Int(x)
    if isinstance(x, float):
        return Float(x)
    if isinstance(x, str):
        return Text(x)
    if isinstance(x, (bytes, bytearray, memoryview)):
        return Bytes(bytes(x))
    raise TypeError(
        f"cannot make a column value of {type(x).__name__}; "
        "use one of the value classes, such as Json(json.dumps(x))"
    )


def is_null(v) -> bool:
    """Whether `v` is SQL NULL."""
    return isinstance(v, Null)


def is_unchanged(v) -> bool:
    """Whether `v` is a TOASTed value the UPDATE did not send."""
    return isinstance(v, Unchanged)


def as_str(v):
    """The text of text-like values (text, numeric, uuid, json, other), or
    `None`."""
    return v.value if isinstance(v, _TEXT_TYPES) else None


def as_int(v):
    """The integer of an int value, or `None`."""
    return v.value if isinstance(v, Int) else None


def as_float(v):
    """A number from an int, float or numeric value, or `None`."""
    if isinstance(v, (Int, Float)):
        return float(v.value)
    if isinstance(v, Numeric):
        try:
            return float(v.value)
        except ValueError:
            return None
    return None


def as_bool(v):
    """The boolean of a boolean value, or `None`."""
    return v.value if isinstance(v, Boolean) else None


def as_bytes(v):
    """The bytes of a bytes value, or `None`."""
    return v.value if isinstance(v, Bytes) else None


def to_text(v):
    """A text form of `v`, `None` for NULL and unchanged values.

    Text-like values as they are, booleans `true`/`false`, bytes in
    Postgres's hex form (`\\x0aff`), dates, times and timestamps as their
    raw numbers (days or microseconds), as the Rust SDK does.
    """
    if v is None or isinstance(v, (Null, Unchanged)):
        return None
    if isinstance(v, _TEXT_TYPES):
        return v.value
    if isinstance(v, Boolean):
        return "true" if v.value else "false"
    if isinstance(v, Bytes):
        return "\\x" + v.value.hex()
    return str(v.value)


# --- destinations and emits ----------------------------------------------


def sink(name: str, topic: str | None = None) -> Destination:
    """The sink `name` from the configuration, at `topic` if given (which
    may hold `{schema}`, `{table}` and `{op}` placeholders)."""
    return Destination(name, topic)


def _destination(d):
    if isinstance(d, Destination):
        return d
    if isinstance(d, str):
        return Destination(d, None)
    raise TypeError(f"expected a Destination or a sink name, not {d!r}")


def _as_bytes(x):
    if x is None or isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    return bytes(x)


def emit_raw(value, key=None, headers=(), to: Destination | None = None) -> Emit:
    """Bytes the sink writes as they are (`str` is encoded as UTF-8),
    delivered to `to`, or where the router decides."""
    message = RawMessage(
        _as_bytes(key), _as_bytes(value), [(name, _as_bytes(v)) for name, v in headers]
    )
    return Emit(to, _wit.Payload_Raw(message))


def emit_change(change: Change, to: Destination | None = None) -> Emit:
    """A change (rows positional) to deliver to `to`, or where the router
    decides."""
    return Emit(to, _wit.Payload_Change(change))


# --- tables and events ----------------------------------------------------


class Table:
    """A captured table as announced by the host, with its columns by name.

    The name-to-position map is built once per announced version, so a
    lookup by name costs one dict access.
    """

    __slots__ = ("raw", "index")

    def __init__(self, raw):
        #: The announcement as the host sent it.
        self.raw = raw
        #: Column name to row position.
        self.index = {c.name: i for i, c in enumerate(raw.columns)}

    @classmethod
    def new(cls, id: int, schema: str, name: str, version: int = 1) -> "Table":
        """A table with no columns yet, for tests: add them with
        `with_key` and `with_column`."""
        return cls(_wit.Table(id, version, schema, name, []))

    def with_key(self, name: str, type_name: str) -> "Table":
        """This table with a key (replica identity) column added."""
        return self._with(name, type_name, True)

    def with_column(self, name: str, type_name: str) -> "Table":
        """This table with an ordinary column added."""
        return self._with(name, type_name, False)

    def with_version(self, version: int) -> "Table":
        """This table at another schema version."""
        raw = self.raw
        return Table(_wit.Table(raw.id, version, raw.schema, raw.name, list(raw.columns)))

    def _with(self, name, type_name, key):
        raw = self.raw
        columns = list(raw.columns) + [Column(name, type_name, key)]
        return Table(_wit.Table(raw.id, raw.version, raw.schema, raw.name, columns))

    @property
    def id(self) -> int:
        """The table's id (its Postgres OID)."""
        return self.raw.id

    @property
    def version(self) -> int:
        """The schema version; it grows when the columns change."""
        return self.raw.version

    @property
    def schema(self) -> str:
        """The schema (namespace) name, such as `public`."""
        return self.raw.schema

    @property
    def name(self) -> str:
        """The table name."""
        return self.raw.name

    @property
    def qualified_name(self) -> str:
        """`schema.name`."""
        return f"{self.raw.schema}.{self.raw.name}"

    @property
    def columns(self):
        """The columns (`name`, `type_name`, `key`), in row order."""
        return self.raw.columns

    @property
    def column_names(self):
        """The column names, in row order."""
        return list(self.index)

    def matches(self, qualified: str) -> bool:
        """Whether `qualified` is `schema.name`, or `schema.*`, or `*`."""
        if qualified == "*":
            return True
        schema, dot, name = qualified.partition(".")
        return bool(dot) and schema == self.raw.schema and name in ("*", self.raw.name)

    def column_index(self, name: str):
        """The position of column `name` in a row, or `None`."""
        return self.index.get(name)

    def value(self, row, name: str):
        """The value of column `name` in `row` (a row of this table), or
        `None` when there is no such column."""
        i = self.index.get(name)
        return None if i is None else row[i]

    def row_dict(self, row) -> dict:
        """`row` as a `{column: value}` dict."""
        return dict(zip(self.index, row))

    def __repr__(self):
        return f"Table({self.qualified_name} v{self.version}, {self.column_names})"


class Event:
    """One change seen through its table: its rows by column name.

    Values changed with `set` and `set_before` are delivered when the plugin
    answers `Outcome.KEEP` or `Outcome.route(...)`.
    """

    __slots__ = ("change", "table", "modified")

    def __init__(self, change: Change, table: Table | None):
        #: The change as the contract carries it, rows positional.
        self.change = change
        #: The `Table` the change refers to; `None` for messages.
        self.table = table
        #: Whether the plugin changed any value.
        self.modified = False

    @property
    def op(self) -> Op:
        """What happened: `Op.INSERT`, `UPDATE`, `DELETE`, `TRUNCATE`,
        `MESSAGE` or `READ` (a row of an initial snapshot)."""
        return self.change.op

    @property
    def schema(self):
        """The table's schema name, `None` for messages."""
        return self.table.raw.schema if self.table is not None else None

    @property
    def table_name(self):
        """The table's name, `None` for messages."""
        return self.table.raw.name if self.table is not None else None

    def is_table(self, qualified: str) -> bool:
        """Whether this is a change to `schema.name` (or `schema.*`)."""
        return self.table is not None and self.table.matches(qualified)

    @property
    def source(self) -> Source:
        """Where in the WAL the change comes from."""
        return self.change.source

    @property
    def message(self):
        """The `LogicalMessage` (`prefix`, `content`) of a message event."""
        return self.change.message

    def after(self, column: str):
        """The new row's value of `column`; `None` when there is no new row
        (deletes, truncates, messages) or no such column."""
        row = self.change.after
        if row is None or self.table is None:
            return None
        i = self.table.index.get(column)
        return None if i is None else row[i]

    def before(self, column: str):
        """The old row's value of `column`. Which columns the old row holds
        depends on the table's REPLICA IDENTITY (usually just the key)."""
        row = self.change.before
        if row is None or self.table is None:
            return None
        i = self.table.index.get(column)
        return None if i is None else row[i]

    def value(self, column: str):
        """The value of `column` in the row the event is about: the new row,
        or the old one for deletes."""
        if self.change.after is not None:
            return self.after(column)
        return self.before(column)

    def text(self, column: str):
        """The text of a text-like `value(column)`, else `None`."""
        return as_str(self.value(column))

    def set(self, column: str, new) -> None:
        """Sets `column` of the new row to `new` (a value, or a plain Python
        value). Raises `PluginError` without a new row or such a column."""
        self._set(self.change.after, "new", column, new)

    def set_before(self, column: str, new) -> None:
        """Sets `column` of the old row."""
        self._set(self.change.before, "old", column, new)

    def _set(self, row, which, column, new):
        if row is None:
            raise PluginError(f"a {self.op.name.lower()} event has no {which} row")
        i = self.table.index.get(column) if self.table is not None else None
        if i is None:
            raise PluginError(self._no_column(column))
        row[i] = value(new)
        self.modified = True

    def _no_column(self, column):
        if self.table is None:
            return f"the event has no table, so no column `{column}`"
        return f"table {self.table.qualified_name} has no column `{column}`"

    def after_columns(self):
        """The new row as `(column, value)` pairs; empty without one."""
        return self._columns(self.change.after)

    def before_columns(self):
        """The old row as `(column, value)` pairs; empty without one."""
        return self._columns(self.change.before)

    def _columns(self, row):
        if row is None or self.table is None:
            return iter(())
        return zip(self.table.index, row)

    def to_emit(self, to: Destination | None = None) -> Emit:
        """A copy of the (possibly modified) change, to deliver to `to` or
        where the router decides."""
        return emit_change(_copy_change(self.change), to)

    def __repr__(self):
        where = self.table.qualified_name if self.table is not None else "-"
        return f"Event({self.op.name} {where})"


def _copy_change(change):
    c = copy.copy(change)
    if c.before is not None:
        c.before = list(c.before)
    if c.after is not None:
        c.after = list(c.after)
    return c


class Outcome:
    """What a transform answers for one event.

    Use `Outcome.KEEP`, `Outcome.DROP`, `Outcome.route(...)`,
    `Outcome.emit(...)`, `Outcome.fail(...)` or `Outcome.retry_later(...)`.
    """

    __slots__ = ("kind", "items", "message", "retryable")

    KEEP: "Outcome"
    DROP: "Outcome"

    def __init__(self, kind, items=(), message="", retryable=False):
        self.kind = kind
        self.items = items
        self.message = message
        self.retryable = retryable

    @staticmethod
    def route(*destinations) -> "Outcome":
        """Deliver the (possibly modified) event to each destination (a
        `Destination`, or a sink name); none at all delivers it nowhere."""
        return Outcome("route", tuple(_destination(d) for d in destinations))

    @staticmethod
    def emit(*emits: Emit) -> "Outcome":
        """Deliver these instead of the event (zero or more)."""
        for e in emits:
            if not isinstance(e, Emit):
                raise TypeError(
                    f"Outcome.emit takes Emits (emit_raw, emit_change, event.to_emit), not {e!r}"
                )
        return Outcome("emit", emits)

    @staticmethod
    def fail(message: str, retryable: bool = False) -> "Outcome":
        """The event cannot be processed; the pipeline's error policy decides
        what happens (dead-letter, stop, retry)."""
        return Outcome("fail", (), str(message), retryable)

    @staticmethod
    def retry_later(message: str) -> "Outcome":
        """A failure that may go away if the event is tried again later."""
        return Outcome("fail", (), str(message), True)

    def __eq__(self, other):
        return isinstance(other, Outcome) and (
            self.kind, list(self.items), self.message, self.retryable
        ) == (other.kind, list(other.items), other.message, other.retryable)

    def __hash__(self):
        return hash(self.kind)

    def __repr__(self):
        if self.kind == "fail":
            return f"Outcome.fail({self.message!r}, retryable={self.retryable})"
        if self.items:
            return f"Outcome.{self.kind}{tuple(self.items)!r}"
        return f"Outcome.{self.kind.upper()}"


Outcome.KEEP = Outcome("keep")
Outcome.DROP = Outcome("drop")


# --- configuration --------------------------------------------------------


class Config:
    """The plugin's `config` table from weir.toml, as string key/value
    pairs (nested tables become dotted keys, arrays comma lists).

    The typed getters raise `ConfigError` naming the key, so every plugin
    reports configuration mistakes the same way.
    """

    _TRUE = frozenset(("true", "yes", "on", "1"))
    _FALSE = frozenset(("false", "no", "off", "0"))

    def __init__(self, pairs=()):
        if isinstance(pairs, dict):
            pairs = pairs.items()
        self._pairs = [(str(k), str(v)) for k, v in pairs]
        # A repeated key: the last wins, as a later line overrides.
        self._map = dict(self._pairs)

    def get(self, key: str, default=None):
        """The value of `key`, or `default`."""
        return self._map.get(key, default)

    def require(self, key: str) -> str:
        """The value of `key`; a `ConfigError` when it is absent."""
        if key not in self._map:
            raise ConfigError(f"missing required config key `{key}`")
        return self._map[key]

    def list(self, key: str, default=()) -> list:
        """The comma-separated items of `key`, trimmed, empty ones skipped;
        `default` when the key is absent."""
        raw = self._map.get(key)
        if raw is None:
            return list(default)
        return [item.strip() for item in raw.split(",") if item.strip()]

    def int(self, key: str, default=None, min=None, max=None):
        """`key` as an integer, `default` when absent."""
        raw = self._map.get(key)
        if raw is None:
            return default
        try:
            number = int(raw.strip())
        except ValueError:
            raise ConfigError(f"config key `{key}`: expected an integer, got {raw!r}") from None
        return self._bounded(key, number, min, max)

    def float(self, key: str, default=None, min=None, max=None):
        """`key` as a number, `default` when absent."""
        raw = self._map.get(key)
        if raw is None:
            return default
        try:
            number = float(raw.strip())
        except ValueError:
            raise ConfigError(f"config key `{key}`: expected a number, got {raw!r}") from None
        return self._bounded(key, number, min, max)

    @staticmethod
    def _bounded(key, number, low, high):
        if low is not None and number < low:
            raise ConfigError(f"config key `{key}`: {number} is below the minimum {low}")
        if high is not None and number > high:
            raise ConfigError(f"config key `{key}`: {number} is above the maximum {high}")
        return number

    def bool(self, key: str, default=None):
        """`key` as a boolean (true/false, yes/no, on/off, 1/0), `default`
        when absent."""
        raw = self._map.get(key)
        if raw is None:
            return default
        word = raw.strip().lower()
        if word in self._TRUE:
            return True
        if word in self._FALSE:
            return False
        raise ConfigError(f"config key `{key}`: expected true or false, got {raw!r}")

    def choice(self, key: str, choices, default=None):
        """`key`, which must be one of `choices`; `default` when absent."""
        raw = self._map.get(key)
        if raw is None:
            return default
        if raw not in choices:
            expected = ", ".join(choices)
            raise ConfigError(f"config key `{key}`: expected one of {expected}, got {raw!r}")
        return raw

    def with_prefix(self, prefix: str) -> list:
        """Every `(key, value)` whose key starts with `prefix`, the prefix
        removed, in order."""
        return [(k[len(prefix):], v) for k, v in self._pairs if k.startswith(prefix)]

    def check_keys(self, *known: str) -> None:
        """Raises a `ConfigError` naming any key not in `known` (a prefix
        ending in `.` admits every key under it), so typos are not
        silently ignored."""
        unknown = [
            k
            for k in self._map
            if k not in known and not any(p.endswith(".") and k.startswith(p) for p in known)
        ]
        if unknown:
            names = ", ".join(f"`{k}`" for k in unknown)
            allowed = ", ".join(known) or "none"
            raise ConfigError(f"unknown config key {names} (known keys: {allowed})")

    def items(self) -> list:
        """Every `(key, value)`, in order."""
        return list(self._pairs)

    def __contains__(self, key):
        return key in self._map

    def __len__(self):
        return len(self._map)

    def __repr__(self):
        return f"Config({self._pairs!r})"


# --- host functions -------------------------------------------------------



class _NoHost:
    """Natively, outside a harness: says where host functions work."""

    def __getattr__(self, name):
        raise RuntimeError(
            f"host function `{name}` is only available inside a component "
            "or a weir_plugin.testing harness"
        )


# The functions of `weir:cdc/host`: the generated module inside a component,
# a recording stand-in installed by `weir_plugin.testing` natively.
_host = _wit.HOST if _wit.IN_COMPONENT else _NoHost()


def _install_host(host):
    global _host
    _host = host


def count(name: str, delta: int = 1) -> None:
    """Adds `delta` (>= 0) to the plugin's counter `name`, exported as
    `weir_plugin_counter_total{plugin, name}`."""
    if delta < 0:
        raise ValueError(f"counter `{name}`: delta must not be negative, got {delta}")
    if delta:
        _host.count(name, delta)


def declare_table(schema: str, name: str, columns) -> int:
    """Declares a table for changes the plugin makes itself and returns the
    id to put in `change.table`. `columns` holds `Column`s or
    `(name, type_name, key)` tuples."""
    cols = [c if isinstance(c, Column) else Column(*c) for c in columns]
    return _host.declare_table(schema, name, cols)


class _Log:
    """Writes to Weir's log, tagged with the plugin's name:
    `log.info("...")`, or `log(Level.WARN, "...")`."""

    def __call__(self, level: Level, message: str) -> None:
        _host.log(level, str(message))

    def trace(self, message: str) -> None:
        _host.log(Level.TRACE, str(message))

    def debug(self, message: str) -> None:
        _host.log(Level.DEBUG, str(message))

    def info(self, message: str) -> None:
        _host.log(Level.INFO, str(message))

    def warn(self, message: str) -> None:
        _host.log(Level.WARN, str(message))

    def error(self, message: str) -> None:
        _host.log(Level.ERROR, str(message))


log = _Log()


class _LogWriter:
    """A text stream whose lines go to Weir's log: inside a component
    `print()` and tracebacks land there, as a sandboxed component has no
    stdout or stderr (componentize-py's `--stub-wasi` makes them trap)."""

    def __init__(self, level):
        self.level = level
        self.pending = ""

    def write(self, text):
        lines = (self.pending + text).split("\n")
        self.pending = lines.pop()
        for line in lines:
            _host.log(self.level, line)
        return len(text)

    def flush(self):
        if self.pending:
            _host.log(self.level, self.pending)
            self.pending = ""

    def isatty(self):
        return False


if _wit.IN_COMPONENT:
    sys.stdout = _LogWriter(Level.INFO)
    sys.stderr = _LogWriter(Level.WARN)


# --- plugin classes and the glue to the exports ---------------------------


class Transform:
    """Base class of transforms.

    The constructor takes the `Config`; raising there (best a
    `ConfigError`) refuses the plugin with that message. One object lives in
    each plugin instance; after a trap the host makes a fresh instance.
    """

    def on_table(self, table: Table) -> None:
        """Called when a table, or a new version of it, is announced, before
        any event of it; override to precompute something per table."""

    def process(self, event: Event) -> Outcome:
        """Decides what `event` becomes. An exception fails the event with
        its message (the error policy decides what happens to it)."""
        raise NotImplementedError("a Transform must define process(event)")

    def commit(self, txn: Transaction) -> list:
        """Define this to be called after each transaction's last change
        (batches are then cut at transaction boundaries). Returns `Emit`s
        delivered after the transaction's changes. An exception here traps
        the instance: there is no event to fail."""
        return []


class Router:
    """Base class of routers: decide where each event goes, unmodified.

    The constructor takes the `Config`, as for `Transform`.
    """

    def on_table(self, table: Table) -> None:
        """Called when a table, or a new version of it, is announced."""

    def route(self, event: Event) -> list:
        """The `Destination`s (or sink names) of `event`; an empty list
        delivers it nowhere.
        An exception traps the instance, as a router cannot fail one event."""
        raise NotImplementedError("a Router must define route(event)")


_NOT_INITIALISED = "the plugin was called before init succeeded"
_WIT_KEEP = _wit.Outcome_Keep()
_WIT_DROP = _wit.Outcome_Drop()


def _describe(error: BaseException) -> str:
    if isinstance(error, (ConfigError, PluginError)):
        return str(error)
    return f"{type(error).__name__}: {error}"


def _make(cls, pairs):
    try:
        return cls(Config(pairs))
    except Exception as e:  # noqa: BLE001 - any error refuses the plugin
        raise _wit.Err(_describe(e)) from None


def _to_wit(outcome, event):
    kind = outcome.kind if isinstance(outcome, Outcome) else None
    if kind == "keep":
        if not event.modified:
            return _WIT_KEEP
        return _wit.Outcome_Replace([Emit(None, _wit.Payload_Change(event.change))])
    if kind == "drop":
        return _WIT_DROP
    if kind == "route":
        destinations = outcome.items
        if not destinations:
            return _wit.Outcome_Replace([])
        # Every destination but the last gets a copy; the last takes the
        # change itself.
        emits = [event.to_emit(d) for d in destinations[:-1]]
        emits.append(Emit(destinations[-1], _wit.Payload_Change(event.change)))
        return _wit.Outcome_Replace(emits)
    if kind == "emit":
        return _wit.Outcome_Replace(list(outcome.items))
    if kind == "fail":
        return _wit.Outcome_Fail(Failure(outcome.message, outcome.retryable))
    return _wit.Outcome_Fail(
        Failure(f"process returned {outcome!r}, not an Outcome", False)
    )


class _TransformRuntime:
    """A transform and the tables announced to it: what the exports call."""

    def __init__(self, cls):
        self.cls = cls
        self.plugin = None
        self.tables = {}

    def init(self):
        self.plugin = _make(self.cls, _host.config())
        # The commit hook is asked for exactly when the plugin defines it.
        wants_commit = type(self.plugin).commit is not Transform.commit
        return _wit.Hooks.COMMIT if wants_commit else _wit.Hooks(0)

    def on_table(self, raw):
        table = Table(raw)
        self.tables[raw.id] = table
        if self.plugin is not None:
            self.plugin.on_table(table)

    def process(self, batch):
        plugin = self.plugin
        if plugin is None:
            return [_wit.Outcome_Fail(Failure(_NOT_INITIALISED, False)) for _ in batch]
        tables = self.tables
        out = []
        for change in batch:
            event = Event(change, tables.get(change.table))
            try:
                outcome = plugin.process(event)
            except Exception as e:  # noqa: BLE001 - fails this event only
                out.append(_wit.Outcome_Fail(Failure(_describe(e), False)))
                continue
            out.append(_to_wit(outcome, event))
        return out

    def commit(self, txn):
        try:
            return list(self.plugin.commit(txn))
        except Exception as e:
            _host.log(Level.ERROR, f"commit failed: {_describe(e)}")
            raise


class _RouterRuntime:
    """A router and the tables announced to it."""

    def __init__(self, cls):
        self.cls = cls
        self.plugin = None
        self.tables = {}

    def init(self):
        self.plugin = _make(self.cls, _host.config())

    def on_table(self, raw):
        table = Table(raw)
        self.tables[raw.id] = table
        if self.plugin is not None:
            self.plugin.on_table(table)

    def route(self, batch):
        plugin = self.plugin
        if plugin is None:
            raise RuntimeError(_NOT_INITIALISED)
        tables = self.tables
        try:
            return [
                [_destination(d) for d in plugin.route(Event(c, tables.get(c.table)))]
                for c in batch
            ]
        except Exception as e:
            _host.log(Level.ERROR, f"route failed: {_describe(e)}")
            raise


def export_transform(cls):
    """The `WitWorld` class componentize-py exports for the transform
    `cls`: assign it to a module-level `WitWorld`."""
    runtime = _TransformRuntime(cls)

    class WitWorld:
        def init(self):
            return runtime.init()

        def on_table(self, table):
            runtime.on_table(table)

        def process(self, batch):
            return runtime.process(batch)

        def commit(self, txn):
            return runtime.commit(txn)

    WitWorld.runtime = runtime
    WitWorld.__qualname__ = f"WitWorld[{cls.__name__}]"
    return WitWorld


def export_router(cls):
    """The `WitWorld` class componentize-py exports for the router `cls`
    (build with `--world router`)."""
    runtime = _RouterRuntime(cls)

    class WitWorld:
        def init(self):
            runtime.init()

        def on_table(self, table):
            runtime.on_table(table)

        def route(self, batch):
            return runtime.route(batch)

    WitWorld.runtime = runtime
    WitWorld.__qualname__ = f"WitWorld[{cls.__name__}]"
    return WitWorld
