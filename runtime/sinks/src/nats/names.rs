//! What NATS accepts as a subject, a stream name, a bucket name and a KV
//! key, and the KV key template: placeholders filled in and escaped so that
//! any column value makes a legal key.

use weir_codec::{Escaping, NameTemplate, TemplateUse};
use weir_core::{ChangeEvent, TableSchema};

/// Checks a subject template for records of kind `used_for`: its fixed text
/// must be legal in a subject, and no record may get an empty token from it.
pub(crate) fn check_subject_template(template: &str, used_for: TemplateUse) -> Result<(), String> {
    let parsed = NameTemplate::parse(template)?;
    let fixed = parsed.fixed_text();
    if let Some(c) = fixed.chars().find(|c| bad_subject_char(*c)) {
        return Err(format!(
            "contains {c:?}; a NATS subject has no spaces, control characters or '*'/'>' wildcards"
        ));
    }
    let shortest = parsed.shortest(used_for);
    if shortest.is_empty() || shortest.split('.').any(str::is_empty) {
        let why = match used_for {
            TemplateUse::Change => "",
            TemplateUse::Message => {
                " (a logical message has no schema, table or key, and its {prefix} may be empty)"
            }
            TemplateUse::Raw => " (a raw record fills in no placeholder)",
        };
        return Err(format!(
            "can make a subject with an empty token{why}: {shortest:?}; tokens are separated by single dots"
        ));
    }
    Ok(())
}

fn bad_subject_char(c: char) -> bool {
    c.is_whitespace() || c.is_control() || c == '*' || c == '>'
}

/// Checks a subject a record filled in; the error is the reason to refuse it.
pub(crate) fn check_subject(subject: &str) -> Result<(), String> {
    if let Some(c) = subject.chars().find(|c| bad_subject_char(*c)) {
        return Err(format!(
            "subject {subject:?} contains {c:?}; a NATS subject has no spaces, control characters or '*'/'>' wildcards"
        ));
    }
    if subject.is_empty() || subject.split('.').any(str::is_empty) {
        return Err(format!(
            "subject {subject:?} has an empty token; tokens are separated by single dots"
        ));
    }
    Ok(())
}

/// Checks a stream or bucket name: letters, digits, `-` and `_` (what
/// NATS allows everywhere, files on disk included).
pub(crate) fn check_store_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".to_owned());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(format!(
            "{name:?} contains {c:?}; use only ASCII letters, digits, '-' and '_'"
        ));
    }
    Ok(())
}

/// The subjects a stream made for these templates listens on: each
/// template's leading fixed tokens, then `>` (a filled-in placeholder may
/// hold dots, so `*` would not cover it), or the template itself when it
/// has no placeholder. Subjects another one covers are left out, since a
/// stream refuses overlapping subjects.
pub(crate) fn stream_subjects(templates: &[&str]) -> Result<Vec<String>, String> {
    let mut subjects: Vec<String> = Vec::new();
    for template in templates {
        let tokens: Vec<&str> = template.split('.').collect();
        let fixed: Vec<&str> = tokens
            .iter()
            .take_while(|t| !t.contains('{'))
            .copied()
            .collect();
        let subject = if fixed.len() == tokens.len() {
            (*template).to_owned()
        } else if fixed.is_empty() {
            return Err(format!(
                "{template:?} starts with a placeholder, so no stream subject can cover it \
                 without taking every subject; start it with fixed text such as \"weir.\""
            ));
        } else {
            format!("{}.>", fixed.join("."))
        };
        if !subjects.contains(&subject) {
            subjects.push(subject);
        }
    }
    let all = subjects.clone();
    subjects.retain(|s| !all.iter().any(|other| other != s && covers(other, s)));
    Ok(subjects)
}

/// Whether the subject filter `pattern` (with `*` and `>` wildcards)
/// matches `subject`, or covers it when `subject` is a filter too.
pub(crate) fn covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether `c` may stand in a KV key as it is. `.` separates tokens and
/// `=` starts an escape, so values never keep either.
fn is_plain_key_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'/')
}

/// Appends `value` to a KV key: ASCII letters, digits, `-`, `_` and `/`
/// as they are, every other byte of its UTF-8 as `=XX` (upper-case hex),
/// and an empty value as `=00` (a byte Postgres text never holds), so
/// that different values always make different keys and a value never
/// adds a token or an empty one.
pub(crate) fn push_escaped(out: &mut String, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    if value.is_empty() {
        out.push_str("=00");
        return;
    }
    for &b in value.as_bytes() {
        if is_plain_key_char(b) {
            out.push(char::from(b));
        } else {
            out.push('=');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
}

/// A KV key template: fixed text and placeholders, each placeholder's
/// text escaped with [`push_escaped`].
#[derive(Clone, Debug)]
pub(crate) struct KeyTemplate {
    /// The whole template, which keys are read back with.
    whole: NameTemplate,
    parts: Vec<KeyPart>,
    /// How many parts come before the first `{key}` or `{key.COLUMN}`:
    /// they make the prefix every key of a table starts with.
    prefix_parts: usize,
}

#[derive(Clone, Debug)]
enum KeyPart {
    Text(String),
    Placeholder(NameTemplate),
}

impl KeyTemplate {
    /// Parses and checks a key template: it must name the row (`{key}` or
    /// `{key.COLUMN}`), put `{table}` before it (a truncate removes the
    /// keys starting with what comes before the row's key), use no `{op}`
    /// or `{prefix}` (a row keeps one key whatever happens to it), and its
    /// fixed text must be legal in a key.
    pub(crate) fn parse(template: &str) -> Result<KeyTemplate, String> {
        let whole = NameTemplate::parse(template)?;
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                parts.push(KeyPart::Text(rest[..open].to_owned()));
            }
            let close = open + rest[open..].find('}').expect("parsed above");
            let placeholder = &rest[open..=close];
            if placeholder == "{op}" || placeholder == "{prefix}" {
                return Err(format!(
                    "uses {placeholder}; a row's key must stay the same whatever happens to the row"
                ));
            }
            parts.push(KeyPart::Placeholder(NameTemplate::parse(placeholder)?));
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(KeyPart::Text(rest.to_owned()));
        }
        let Some(prefix_parts) = parts
            .iter()
            .position(|p| matches!(p, KeyPart::Placeholder(t) if t.uses_key()))
        else {
            return Err(
                "has no {key} or {key.COLUMN}, so every row of a table would share one key"
                    .to_owned(),
            );
        };
        let prefix = &template[..template.find("{key").expect("has a key placeholder")];
        if !prefix.contains("{table}") {
            return Err(
                "must have {table} before {key}: a truncate removes the keys that start with \
                 what comes before the row's key"
                    .to_owned(),
            );
        }
        let mut shape = String::new();
        for part in &parts {
            match part {
                KeyPart::Text(t) => shape.push_str(t),
                KeyPart::Placeholder(..) => shape.push('x'),
            }
        }
        if let Some(c) = shape
            .bytes()
            .find(|b| !(is_plain_key_char(*b) || *b == b'.'))
        {
            return Err(format!(
                "contains {:?}; a key template's text has only ASCII letters, digits, '-', '_', \
                 '/' and '.' ('=' starts the escapes of filled-in values)",
                char::from(c)
            ));
        }
        if shape.split('.').any(str::is_empty) {
            return Err(
                "makes keys with an empty token (a leading, trailing or doubled '.')".to_owned(),
            );
        }
        Ok(KeyTemplate {
            whole,
            parts,
            prefix_parts,
        })
    }

    /// Writes `event`'s key into `out`, replacing its content.
    pub(crate) fn expand(&self, event: &ChangeEvent, out: &mut String) -> Result<(), String> {
        self.expand_parts(&self.parts, event, out)
    }

    /// Writes the text every key of `event`'s table starts with.
    pub(crate) fn prefix(&self, event: &ChangeEvent, out: &mut String) -> Result<(), String> {
        self.expand_parts(&self.parts[..self.prefix_parts], event, out)
    }

    fn expand_parts(
        &self,
        parts: &[KeyPart],
        event: &ChangeEvent,
        out: &mut String,
    ) -> Result<(), String> {
        out.clear();
        let mut scratch = String::new();
        for part in parts {
            match part {
                KeyPart::Text(t) => out.push_str(t),
                KeyPart::Placeholder(p) => {
                    p.expand_event(event, &mut scratch)
                        .map_err(|e| e.to_string())?;
                    push_escaped(out, &scratch);
                }
            }
        }
        Ok(())
    }

    /// Reads a key of `table` back into the texts of its key columns, in
    /// table order, undoing the escapes and `{key}`'s joining; `None` when
    /// `key` is no key of the table, or could be several (two key
    /// placeholders with no `.` between them).
    pub(crate) fn read_key(&self, table: &TableSchema, key: &str) -> Option<Vec<String>> {
        self.whole.key_reader(table, ESCAPING).read(key)
    }
}

/// How a key holds each filled-in placeholder.
const ESCAPING: Escaping = Escaping {
    escape: push_escaped,
    unescape,
};

/// Undoes [`push_escaped`]: `None` for text it never makes.
fn unescape(text: &str) -> Option<String> {
    if text == "=00" {
        return Some(String::new());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if is_plain_key_char(b) {
            out.push(b);
            i += 1;
        } else if b == b'=' {
            let hex = |c: u8| match c {
                b'0'..=b'9' => Some(c - b'0'),
                b'A'..=b'F' => Some(c - b'A' + 10),
                _ => None,
            };
            let byte = (hex(*bytes.get(i + 1)?)? << 4) | hex(*bytes.get(i + 2)?)?;
            // Plain bytes are never escaped, and no value holds a NUL.
            if byte == 0 || is_plain_key_char(byte) {
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            return None;
        }
    }
    if out.is_empty() {
        return None;
    }
    String::from_utf8(out).ok()
}
