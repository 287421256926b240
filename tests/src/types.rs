//! The types table every end-to-end types test uses: one column per type
//! Weir decodes, and rows of edge values (extremes, infinities, NULLs,
//! text that needs escaping), so every sink is checked on the same values.

use crate::Json;

/// `CREATE TABLE typed (…)`.
pub const TYPES_TABLE: &str = "CREATE TABLE typed (
    id int PRIMARY KEY,
    b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8, n numeric, n2 numeric(12,3),
    t text, vc varchar(20), bp char(5), nm name, by bytea,
    d date, tm time, ts timestamp, tstz timestamptz, u uuid, j json, jb jsonb,
    addr inet, span interval, arr int4[]
)";

/// `INSERT INTO typed VALUES …`, the rows the tests compare.
pub const TYPES_ROWS: &str = r#"
INSERT INTO typed VALUES (1,
    true, -32768, 2147483647, 9223372036854775807, 1.5, -2.25e300,
    '-12345678901234567890.123456789', 42.5,
    E'héllo "quoted"\n\ttab \\ done', 'abc', 'ab', 'a_name', '\x00ff10',
    '2024-02-29', '13:14:15.123456', '2024-02-29 13:14:15.5', '2024-02-29 13:14:15.123+02',
    'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{"a": [1, 2.5, "x"]}', '{"b": {"c": null}, "d": [true]}',
    '10.1.2.3/24', '1 day 02:00:03', '{1,2,3}');
INSERT INTO typed (id) VALUES (2);
INSERT INTO typed VALUES (3,
    false, 0, -2147483648, -9223372036854775808, 'NaN', 'Infinity',
    'NaN', 0,
    '', '', '', '', '',
    '-infinity', '00:00:00', 'infinity', '-infinity',
    '00000000-0000-0000-0000-000000000000', '[]', '{}',
    '::1', '-1 mons', '{}');
INSERT INTO typed (id, f4, f8, n, d, tm, ts, tstz) VALUES (4,
    '-Infinity', 1e-300, '0.000000000000000000001', '0044-03-15 BC', '23:59:59.999999',
    '0044-03-15 12:00:00 BC', '1970-01-01 00:00:00.000001+00');
INSERT INTO typed (id, n, d, ts) VALUES (5, 'Infinity', '9999-12-31', '2000-01-01 00:00:00');
"#;

/// The rows of [`TYPES_ROWS`] as the native JSON envelope writes them;
/// rows 4 and 5 list only the columns they set (the others are NULL).
pub fn native_rows() -> Vec<Json> {
    use serde_json::json;
    vec![
        json!({"id": 1, "b": true, "i2": -32768, "i4": 2147483647, "i8": 9223372036854775807i64,
               "f4": 1.5, "f8": -2.25e300, "n": "-12345678901234567890.123456789", "n2": "42.500",
               "t": "héllo \"quoted\"\n\ttab \\ done", "vc": "abc", "bp": "ab   ", "nm": "a_name",
               "by": "AP8Q", "d": "2024-02-29", "tm": "13:14:15.123456", "ts": "2024-02-29T13:14:15.5",
               "tstz": "2024-02-29T11:14:15.123Z", "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
               "j": {"a": [1, 2.5, "x"]}, "jb": {"b": {"c": null}, "d": [true]},
               "addr": "10.1.2.3/24", "span": "1 day 02:00:03", "arr": "{1,2,3}"}),
        json!({"id": 2, "b": null, "i2": null, "i4": null, "i8": null, "f4": null, "f8": null,
               "n": null, "n2": null, "t": null, "vc": null, "bp": null, "nm": null, "by": null,
               "d": null, "tm": null, "ts": null, "tstz": null, "u": null, "j": null, "jb": null,
               "addr": null, "span": null, "arr": null}),
        json!({"id": 3, "b": false, "i2": 0, "i4": -2147483648, "i8": -9223372036854775808i64,
               "f4": "NaN", "f8": "Infinity", "n": "NaN", "n2": "0.000", "t": "", "vc": "",
               "bp": "     ", "nm": "", "by": "", "d": "-infinity", "tm": "00:00:00",
               "ts": "infinity", "tstz": "-infinity", "u": "00000000-0000-0000-0000-000000000000",
               "j": [], "jb": {}, "addr": "::1", "span": "-1 mons", "arr": "{}"}),
        json!({"id": 4, "f4": "-Infinity", "f8": 1e-300, "n": "0.000000000000000000001",
               "d": "-0043-03-15", "tm": "23:59:59.999999", "ts": "-0043-03-15T12:00:00",
               "tstz": "1970-01-01T00:00:00.000001Z"}),
        json!({"id": 5, "n": "Infinity", "d": "9999-12-31", "ts": "2000-01-01T00:00:00"}),
    ]
}
