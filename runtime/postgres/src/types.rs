//! Column types: how the values of each type are decoded.
//!
//! pgoutput names a column's type by its OID. Built-in OIDs are known here
//! (through `postgres_types`); every other type (enums, domains,
//! composites, arrays and ranges of them, extension types) is looked up in
//! `pg_type` ([`lookup`]) when a Relation message first needs it. Only
//! binary mode needs that: in text mode every value arrives as its output
//! function's text.
//!
//! A type decodes by its [`Form`]: the types with a [`Value`] of their own
//! by [`Form::Typed`], every other one to `Value::Other` holding the text
//! Postgres would have printed ([`crate::printed`]), so a value reads the
//! same in text and binary mode. What a type's binary form means follows
//! from what it is: a domain is its base type, an enum sends its label, a
//! composite, array, range or multirange nests the forms of its parts, and
//! a base type is known by name (built-in) or by its send function
//! (`citext`'s sends its text, as `textsend` does). A type with a send
//! function Weir does not know (`hstore`, PostGIS's `geometry`) is
//! [`Form::Unsupported`]: binary
//! mode refuses a column of it, naming the column, since pgoutput offers
//! no text for it in that mode.
//!
//! [`Value`]: weir_core::Value

use std::collections::HashMap;

use postgres_types::{Kind, Type};
use tokio_postgres::Client;
use weir_codec::PgType;

use crate::PgError;

/// How one type's values are decoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Form {
    /// A type with a [`weir_core::Value`] of its own.
    Typed(PgType),
    /// `interval`.
    Interval,
    /// `timetz`.
    TimeTz,
    /// `inet` and `cidr` (the binary form says which).
    Inet,
    /// `macaddr`.
    MacAddr,
    /// `macaddr8`.
    MacAddr8,
    /// `money`, as printed with `lc_monetary = C` (the session's setting).
    Money,
    /// `bit` and `varbit`.
    Bits,
    /// `"char"`.
    Char,
    /// `pg_lsn`; from PostgreSQL 18 its low half is printed zero-padded.
    Lsn { padded: bool },
    /// `xid` and `cid`.
    Xid,
    /// `xid8`.
    Xid8,
    /// `tid`.
    Tid,
    /// `point`.
    Point,
    /// `line`.
    Line,
    /// `lseg`.
    Lseg,
    /// `box`.
    Box,
    /// `path`.
    Path,
    /// `polygon`.
    Polygon,
    /// `circle`.
    Circle,
    /// `pg_snapshot` and `txid_snapshot`.
    Snapshot,
    /// `tsvector`.
    TsVector,
    /// `tsquery`.
    TsQuery,
    /// `jsonpath`: a version byte, then its text.
    JsonPath,
    /// A type whose binary form is its text: enums, `xml`, `refcursor`,
    /// and extension types that send their text (`citext`).
    Label,
    /// An array of `elem`, its elements separated by `delim`.
    Array {
        elem: std::boxed::Box<Form>,
        delim: u8,
    },
    /// `int2vector` and `oidvector`: an array printed space-separated.
    Vector(std::boxed::Box<Form>),
    /// A range of its subtype.
    Range(std::boxed::Box<Form>),
    /// A multirange of its range's subtype.
    Multirange(std::boxed::Box<Form>),
    /// A composite type: its fields' type OIDs and forms, in order.
    Record(std::boxed::Box<[(u32, Form)]>),
    /// A type without a send function: pgoutput sends its text even in
    /// binary mode.
    TextOnly,
    /// A type not looked up (text mode, or a decoder without a catalog):
    /// its text decodes, a binary value is an error.
    Unknown,
    /// A type with a send function Weir cannot turn into its text.
    Unsupported {
        /// The type's name.
        name: String,
        /// Its send function.
        send: String,
    },
}

impl Form {
    /// The first part of this form that cannot be decoded from binary,
    /// as (type name, send function).
    pub(crate) fn unsupported(&self) -> Option<(&str, &str)> {
        match self {
            Form::Unsupported { name, send } => Some((name, send)),
            Form::Array { elem: f, .. }
            | Form::Vector(f)
            | Form::Range(f)
            | Form::Multirange(f) => f.unsupported(),
            Form::Record(fields) => fields.iter().find_map(|(_, f)| f.unsupported()),
            _ => None,
        }
    }
}

/// Non-built-in types by OID: their names (`schema.name`) and forms.
pub(crate) type Catalog = HashMap<u32, (String, Form)>;

/// The form of a built-in type, from `postgres_types`' table; `None` for
/// an OID it does not know.
pub(crate) fn builtin(oid: u32, server_version: u32) -> Option<(String, Form)> {
    let t = Type::from_oid(oid)?;
    Some((t.name().to_owned(), builtin_form(&t, server_version)))
}

fn builtin_form(t: &Type, server_version: u32) -> Form {
    // The vectors' element types make them arrays to postgres_types, but
    // they print space-separated.
    match t.name() {
        "int2vector" => return Form::Vector(Box::new(Form::Typed(PgType::Int2))),
        "oidvector" => return Form::Vector(Box::new(Form::Typed(PgType::Oid))),
        _ => {}
    }
    match t.kind() {
        Kind::Array(elem) => Form::Array {
            elem: Box::new(builtin_form(elem, server_version)),
            // `box` is the one built-in type whose typdelim is not ','.
            delim: if *elem == Type::BOX { b';' } else { b',' },
        },
        Kind::Range(sub) => Form::Range(Box::new(builtin_form(sub, server_version))),
        Kind::Multirange(sub) => Form::Multirange(Box::new(builtin_form(sub, server_version))),
        Kind::Domain(base) => builtin_form(base, server_version),
        _ => scalar(t.name(), server_version),
    }
}

/// The form of a built-in scalar type by name.
fn scalar(name: &str, server_version: u32) -> Form {
    match PgType::from_name(name) {
        PgType::Other => {}
        typed => return Form::Typed(typed),
    }
    match name {
        "interval" => Form::Interval,
        "timetz" => Form::TimeTz,
        "inet" | "cidr" => Form::Inet,
        "macaddr" => Form::MacAddr,
        "macaddr8" => Form::MacAddr8,
        "money" => Form::Money,
        "bit" | "varbit" => Form::Bits,
        "char" => Form::Char,
        "pg_lsn" => Form::Lsn {
            padded: server_version >= 180_000,
        },
        "xid" | "cid" => Form::Xid,
        "xid8" => Form::Xid8,
        "tid" => Form::Tid,
        "point" => Form::Point,
        "line" => Form::Line,
        "lseg" => Form::Lseg,
        "box" => Form::Box,
        "path" => Form::Path,
        "polygon" => Form::Polygon,
        "circle" => Form::Circle,
        "pg_snapshot" | "txid_snapshot" => Form::Snapshot,
        "tsvector" => Form::TsVector,
        "tsquery" => Form::TsQuery,
        "jsonpath" => Form::JsonPath,
        "xml" | "refcursor" | "unknown" => Form::Label,
        "aclitem" | "gtsvector" => Form::TextOnly,
        // reg* types send their OID, but print a name looked up in the
        // catalog as it was when the change was decoded.
        other => Form::Unsupported {
            name: other.to_owned(),
            send: format!("{other}send"),
        },
    }
}

/// Send functions whose binary form is the value's text: the core ones,
/// and `citext`'s, which sends its text as `textsend` does.
const TEXT_SENDS: &[&str] = &[
    "textsend",
    "varcharsend",
    "bpcharsend",
    "namesend",
    "unknownsend",
    "enum_send",
    "citextsend",
];

/// One `pg_type` row, as [`lookup`] reads it.
#[derive(Debug)]
struct TypeRow {
    name: String,
    typtype: i8,
    send: String,
    elem: u32,
    delim: i8,
    base: u32,
    /// A range's subtype, or a multirange's range's subtype.
    subtype: u32,
    fields: Vec<u32>,
}

/// Looks up the forms of `oids` (and of the types they are made of) in
/// the server's catalog. The name is `schema.name`, as a Type message
/// names a type outside `pg_catalog`.
pub(crate) async fn lookup(
    client: &Client,
    addr: &str,
    server_version: u32,
    oids: &[u32],
) -> Result<Catalog, PgError> {
    let mut rows: HashMap<u32, TypeRow> = HashMap::new();
    let mut wanted: Vec<u32> = oids.to_vec();
    // Each round reads the types the previous one referred to; types nest
    // only a few levels deep (an array of a domain over a composite …).
    for _ in 0..16 {
        wanted.retain(|o| !rows.contains_key(o) && Type::from_oid(*o).is_none());
        wanted.sort_unstable();
        wanted.dedup();
        if wanted.is_empty() {
            break;
        }
        let found = client
            .query(
                "SELECT t.oid, CASE WHEN n.nspname = 'pg_catalog' THEN t.typname::text \
                    ELSE n.nspname || '.' || t.typname END, \
                  t.typtype, t.typsend::text, t.typelem, t.typdelim, t.typbasetype, \
                  coalesce(r.rngsubtype, mr.rngsubtype, 0::oid), \
                  coalesce((SELECT array_agg(a.atttypid ORDER BY a.attnum) FROM pg_attribute a \
                    WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped), \
                    '{}'::oid[]) \
                 FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                 LEFT JOIN pg_range r ON r.rngtypid = t.oid \
                 LEFT JOIN pg_range mr ON mr.rngmultitypid = t.oid \
                 WHERE t.oid = ANY($1)",
                &[&wanted],
            )
            .await
            .map_err(|e| PgError::sql(addr, "looking up column types", e))?;
        let mut next = Vec::new();
        for row in found {
            let r = TypeRow {
                name: row.get(1),
                typtype: row.get(2),
                send: row.get(3),
                elem: row.get(4),
                delim: row.get(5),
                base: row.get(6),
                subtype: row.get(7),
                fields: row.get(8),
            };
            next.extend([r.elem, r.base, r.subtype].into_iter().filter(|o| *o != 0));
            next.extend(&r.fields);
            rows.insert(row.get(0), r);
        }
        wanted = next;
    }
    Ok(oids
        .iter()
        .map(|&oid| {
            let name = match (Type::from_oid(oid), rows.get(&oid)) {
                (Some(t), _) => t.name().to_owned(),
                (None, Some(r)) => r.name.clone(),
                (None, None) => format!("oid:{oid}"),
            };
            (oid, (name, form_of(oid, &rows, server_version, 0)))
        })
        .collect())
}

fn form_of(oid: u32, rows: &HashMap<u32, TypeRow>, version: u32, depth: u32) -> Form {
    if let Some(t) = Type::from_oid(oid) {
        return builtin_form(&t, version);
    }
    let Some(r) = rows.get(&oid).filter(|_| depth < 16) else {
        return Form::Unsupported {
            name: format!("oid:{oid}"),
            send: "(not found in pg_type)".into(),
        };
    };
    let part = |o: u32| Box::new(form_of(o, rows, version, depth + 1));
    match r.typtype as u8 {
        b'd' => form_of(r.base, rows, version, depth + 1),
        b'e' => Form::Label,
        b'c' => Form::Record(
            r.fields
                .iter()
                .map(|&f| (f, form_of(f, rows, version, depth + 1)))
                .collect(),
        ),
        b'r' => Form::Range(part(r.subtype)),
        b'm' => Form::Multirange(part(r.subtype)),
        _ if r.send == "-" => Form::TextOnly,
        _ if r.send == "array_send" && r.elem != 0 => Form::Array {
            elem: part(r.elem),
            delim: r.delim as u8,
        },
        _ if TEXT_SENDS.contains(&r.send.as_str()) => Form::Label,
        _ => Form::Unsupported {
            name: r.name.clone(),
            send: r.send.clone(),
        },
    }
}

/// Why binary mode cannot stream `column` (`schema.table.column`): its
/// type, or the `part` of it sent by `send`, has no binary decoder, and
/// pgoutput offers no text for it in that mode.
pub(crate) fn unsupported_column(column: &str, type_name: &str, part: &str, send: &str) -> String {
    let sent = if part == type_name {
        format!("it is sent by {send}")
    } else {
        format!("its part {part} is sent by {send}")
    };
    format!(
        "column {column} is of type {type_name}, which Weir cannot decode from pgoutput's \
         binary form ({sent}), and in binary mode pgoutput sends no text for it: set \
         source.binary = false, or leave the column out of the publication (a column \
         list, PostgreSQL 15+)"
    )
}

/// The forms of the non-built-in types of every column `publication`
/// publishes, for a stream in binary mode; refuses a column whose type
/// has no binary decoder, naming it, before anything is streamed.
pub(crate) async fn published_catalog(
    client: &Client,
    addr: &str,
    server_version: u32,
    publication: &str,
) -> Result<Catalog, PgError> {
    // From PostgreSQL 15 a publication may send only some columns.
    let column_list = if server_version >= 150_000 {
        "AND a.attname = ANY (pt.attnames)"
    } else {
        ""
    };
    let columns = client
        .query(
            &format!(
                "SELECT pt.schemaname::text, pt.tablename::text, a.attname::text, a.atttypid \
                 FROM pg_catalog.pg_publication_tables pt \
                 JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname \
                 JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
                 JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
                 WHERE pt.pubname = $1 AND a.attnum > 0 AND NOT a.attisdropped \
                   AND a.attgenerated = '' {column_list} \
                 ORDER BY 1, 2, a.attnum"
            ),
            &[&publication],
        )
        .await
        .map_err(|e| PgError::sql(addr, "reading the published columns' types", e))?;
    let mut oids: Vec<u32> = columns
        .iter()
        .map(|r| r.get::<_, u32>(3))
        .filter(|o| builtin(*o, server_version).is_none())
        .collect();
    oids.sort_unstable();
    oids.dedup();
    let catalog = lookup(client, addr, server_version, &oids).await?;
    for row in &columns {
        let oid: u32 = row.get(3);
        let (type_name, form) = match builtin(oid, server_version) {
            Some(b) => b,
            None => catalog
                .get(&oid)
                .cloned()
                .unwrap_or((format!("oid:{oid}"), Form::Unknown)),
        };
        if let Some((part, send)) = form.unsupported() {
            let column = format!(
                "{}.{}.{}",
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2)
            );
            return Err(PgError::Config(format!(
                "source.binary: {}",
                unsupported_column(&column, &type_name, part, send)
            )));
        }
    }
    Ok(catalog)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_types_have_forms() {
        let f = |oid| builtin(oid, 150_000).unwrap().1;
        assert_eq!(f(Type::INT4.oid()), Form::Typed(PgType::Int4));
        assert_eq!(f(Type::INTERVAL.oid()), Form::Interval);
        assert_eq!(
            f(Type::INT4_ARRAY.oid()),
            Form::Array {
                elem: Box::new(Form::Typed(PgType::Int4)),
                delim: b','
            }
        );
        assert_eq!(
            f(Type::BOX_ARRAY.oid()),
            Form::Array {
                elem: Box::new(Form::Box),
                delim: b';'
            }
        );
        assert_eq!(
            f(Type::INT2_VECTOR.oid()),
            Form::Vector(Box::new(Form::Typed(PgType::Int2)))
        );
        assert_eq!(
            f(Type::TSTZ_RANGE.oid()),
            Form::Range(Box::new(Form::Typed(PgType::TimestampTz)))
        );
        assert_eq!(
            f(Type::INT8MULTI_RANGE.oid()),
            Form::Multirange(Box::new(Form::Typed(PgType::Int8)))
        );
        assert_eq!(f(Type::PG_LSN.oid()), Form::Lsn { padded: false });
        assert_eq!(
            builtin(Type::PG_LSN.oid(), 180_000).unwrap().1,
            Form::Lsn { padded: true }
        );
        assert_eq!(f(Type::ACLITEM.oid()), Form::TextOnly);
        let regclass = f(Type::REGCLASS.oid());
        assert_eq!(regclass.unsupported().map(|u| u.0), Some("regclass"));
        let arr = f(Type::REGCLASS_ARRAY.oid());
        assert_eq!(arr.unsupported().map(|u| u.0), Some("regclass"));
        assert_eq!(f(Type::INT4_ARRAY.oid()).unsupported(), None);
    }

    #[test]
    fn catalog_rows_become_forms() {
        let row = |typtype: u8, send: &str| TypeRow {
            name: "app.t".into(),
            typtype: typtype as i8,
            send: send.into(),
            elem: 0,
            delim: b',' as i8,
            base: 0,
            subtype: 0,
            fields: Vec::new(),
        };
        let mut rows = HashMap::new();
        rows.insert(100_000, row(b'e', "enum_send"));
        rows.insert(
            100_001,
            TypeRow {
                elem: 100_000,
                ..row(b'b', "array_send")
            },
        );
        rows.insert(
            100_002,
            TypeRow {
                base: 100_001,
                ..row(b'd', "array_send")
            },
        );
        rows.insert(
            100_003,
            TypeRow {
                fields: vec![Type::INT4.oid(), 100_000],
                ..row(b'c', "record_send")
            },
        );
        rows.insert(100_004, row(b'b', "hstore_send"));
        rows.insert(100_005, row(b'b', "textsend"));
        rows.insert(
            100_006,
            TypeRow {
                subtype: Type::DATE.oid(),
                ..row(b'r', "range_send")
            },
        );
        let f = |oid| form_of(oid, &rows, 150_000, 0);
        assert_eq!(f(100_000), Form::Label);
        let array_of_enum = Form::Array {
            elem: Box::new(Form::Label),
            delim: b',',
        };
        assert_eq!(f(100_001), array_of_enum);
        assert_eq!(f(100_002), array_of_enum);
        assert_eq!(
            f(100_003),
            Form::Record(
                vec![
                    (Type::INT4.oid(), Form::Typed(PgType::Int4)),
                    (100_000, Form::Label)
                ]
                .into()
            )
        );
        assert_eq!(f(100_004).unsupported(), Some(("app.t", "hstore_send")));
        assert_eq!(f(100_005), Form::Label);
        assert_eq!(f(100_006), Form::Range(Box::new(Form::Typed(PgType::Date))));
        assert!(f(123).unsupported().is_some());
    }
}
