//! Postgres's built-in types, by name: the one table the Postgres decoder
//! (how to parse a value) and the encoders (how to write one, for formats
//! such as Debezium's that distinguish `int2` from `int8`) share.

/// A built-in Postgres type Weir treats specially; everything else is
/// [`PgType::Other`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum PgType {
    /// `bool`
    Bool,
    /// `int2`
    Int2,
    /// `int4`
    Int4,
    /// `int8`
    Int8,
    /// `oid`
    Oid,
    /// `float4`
    Float4,
    /// `float8`
    Float8,
    /// `numeric`
    Numeric,
    /// `text`, `varchar`, `bpchar` and `name`
    Text,
    /// `bytea`
    Bytea,
    /// `date`
    Date,
    /// `time` (without time zone)
    Time,
    /// `timestamp` (without time zone)
    Timestamp,
    /// `timestamptz`
    TimestampTz,
    /// `uuid`
    Uuid,
    /// `json`
    Json,
    /// `jsonb`
    Jsonb,
    /// Any other type, including arrays, enums and extension types.
    Other,
}

impl PgType {
    /// The type of a built-in type's name (`pg_type.typname`, as
    /// [`Column::type_name`](weir_core::Column::type_name) holds it): the
    /// one table for built-in OIDs and for domains, whose Type message
    /// names the base type.
    pub fn from_name(name: &str) -> PgType {
        match name {
            "bool" => PgType::Bool,
            "bytea" => PgType::Bytea,
            "name" | "text" | "bpchar" | "varchar" => PgType::Text,
            "int8" => PgType::Int8,
            "int2" => PgType::Int2,
            "int4" => PgType::Int4,
            "oid" => PgType::Oid,
            "json" => PgType::Json,
            "float4" => PgType::Float4,
            "float8" => PgType::Float8,
            "date" => PgType::Date,
            "time" => PgType::Time,
            "timestamp" => PgType::Timestamp,
            "timestamptz" => PgType::TimestampTz,
            "numeric" => PgType::Numeric,
            "uuid" => PgType::Uuid,
            "jsonb" => PgType::Jsonb,
            _ => PgType::Other,
        }
    }
}
