"""The contract's types (`weir:cdc/types`) and host functions.

Inside a component these are the classes componentize-py generates from the
WIT (module `wit_world`), used as they are so no value is ever converted.
In plain CPython (unit tests) the same classes are defined here with the
same names and fields; Weir's `plugins/python/tests` checks the two stay
identical against the bindings componentize-py generates (its build script
runs that check).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, Flag, auto
from typing import List, Optional, Tuple, Union

try:
    from componentize_py_types import Err
    from wit_world.imports import host as HOST
    from wit_world.imports import types as _generated

    IN_COMPONENT = True
except ImportError:
    IN_COMPONENT = False


if IN_COMPONENT:
    # Exposed one by one (not `import *`) so a renamed WIT type fails at
    # build time, when componentize-py imports this module.
    Value_Null = _generated.Value_Null
    Value_Unchanged = _generated.Value_Unchanged
    Value_Boolean = _generated.Value_Boolean
    Value_Int = _generated.Value_Int
    Value_Float = _generated.Value_Float
    Value_Numeric = _generated.Value_Numeric
    Value_Text = _generated.Value_Text
    Value_Bytes = _generated.Value_Bytes
    Value_Date = _generated.Value_Date
    Value_Time = _generated.Value_Time
    Value_Timestamp = _generated.Value_Timestamp
    Value_Timestamptz = _generated.Value_Timestamptz
    Value_Uuid = _generated.Value_Uuid
    Value_Json = _generated.Value_Json
    Value_Other = _generated.Value_Other
    Op = _generated.Op
    Column = _generated.Column
    Table = _generated.Table
    Source = _generated.Source
    LogicalMessage = _generated.LogicalMessage
    Change = _generated.Change
    RawMessage = _generated.RawMessage
    Payload_Change = _generated.Payload_Change
    Payload_Raw = _generated.Payload_Raw
    Destination = _generated.Destination
    Emit = _generated.Emit
    Transaction = _generated.Transaction
    Hooks = _generated.Hooks
    Failure = _generated.Failure
    Outcome_Keep = _generated.Outcome_Keep
    Outcome_Drop = _generated.Outcome_Drop
    Outcome_Replace = _generated.Outcome_Replace
    Outcome_Fail = _generated.Outcome_Fail
    Level = HOST.Level
else:
    HOST = None  # the testing module installs a native host

    @dataclass(frozen=True)
    class Err(Exception):
        value: object

    @dataclass
    class Value_Null:
        pass

    @dataclass
    class Value_Unchanged:
        pass

    @dataclass
    class Value_Boolean:
        value: bool

    @dataclass
    class Value_Int:
        value: int

    @dataclass
    class Value_Float:
        value: float

    @dataclass
    class Value_Numeric:
        value: str

    @dataclass
    class Value_Text:
        value: str

    @dataclass
    class Value_Bytes:
        value: bytes

    @dataclass
    class Value_Date:
        value: int

    @dataclass
    class Value_Time:
        value: int

    @dataclass
    class Value_Timestamp:
        value: int

    @dataclass
    class Value_Timestamptz:
        value: int

    @dataclass
    class Value_Uuid:
        value: str

    @dataclass
    class Value_Json:
        value: str

    @dataclass
    class Value_Other:
        value: str

    class Op(Enum):
        INSERT = 0
        UPDATE = 1
        DELETE = 2
        TRUNCATE = 3
        MESSAGE = 4
        READ = 5

    @dataclass
    class Column:
        name: str
        type_name: str
        key: bool

    @dataclass
    class Table:
        id: int
        version: int
        schema: str
        name: str
        columns: List[Column]

    @dataclass
    class Source:
        commit_lsn: int
        lsn: int
        xid: int
        commit_time_micros: int
        seq: int

    @dataclass
    class LogicalMessage:
        prefix: str
        content: bytes

    @dataclass
    class Change:
        op: Op
        table: int
        before: Optional[list]
        after: Optional[list]
        message: Optional[LogicalMessage]
        source: Source

    @dataclass
    class RawMessage:
        key: Optional[bytes]
        value: Optional[bytes]
        headers: List[Tuple[str, bytes]]

    @dataclass
    class Payload_Change:
        value: Change

    @dataclass
    class Payload_Raw:
        value: RawMessage

    @dataclass
    class Destination:
        sink: str
        topic: Optional[str]

    @dataclass
    class Emit:
        destination: Optional[Destination]
        payload: Union[Payload_Change, Payload_Raw]

    @dataclass
    class Transaction:
        xid: int
        commit_lsn: int
        commit_time_micros: int

    class Hooks(Flag):
        COMMIT = auto()

    @dataclass
    class Failure:
        message: str
        retryable: bool

    @dataclass
    class Outcome_Keep:
        pass

    @dataclass
    class Outcome_Drop:
        pass

    @dataclass
    class Outcome_Replace:
        value: List[Emit]

    @dataclass
    class Outcome_Fail:
        value: Failure

    class Level(Enum):
        TRACE = 0
        DEBUG = 1
        INFO = 2
        WARN = 3
        ERROR = 4


VALUE_TYPES = (
    Value_Null,
    Value_Unchanged,
    Value_Boolean,
    Value_Int,
    Value_Float,
    Value_Numeric,
    Value_Text,
    Value_Bytes,
    Value_Date,
    Value_Time,
    Value_Timestamp,
    Value_Timestamptz,
    Value_Uuid,
    Value_Json,
    Value_Other,
)

# Every name above that mirrors a generated one, for the consistency test.
MIRRORED_TYPES = {
    cls.__name__: cls
    for cls in VALUE_TYPES
    + (
        Op,
        Column,
        Table,
        Source,
        LogicalMessage,
        Change,
        RawMessage,
        Payload_Change,
        Payload_Raw,
        Destination,
        Emit,
        Transaction,
        Hooks,
        Failure,
        Outcome_Keep,
        Outcome_Drop,
        Outcome_Replace,
        Outcome_Fail,
    )
}
