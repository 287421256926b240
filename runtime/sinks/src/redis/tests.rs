//! Unit tests of the `redis` sink's configuration (no server).

use weir_codec::TemplateUse;

use super::config::{KeyTemplate, redact_url};
use super::*;
use crate::registry::parse_sink;

fn parse(text: &str) -> Box<dyn crate::SinkSpec> {
    parse_sink(text.parse().unwrap()).unwrap()
}

#[test]
fn defaults_and_capabilities() {
    let spec = parse("type = \"redis\"\nurl = \"redis://127.0.0.1:6379\"");
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let caps = spec.capabilities();
    assert!(caps.applies_state && caps.needs_key && !caps.accepts_raw);
    let config = spec.as_any().downcast_ref::<RedisSinkConfig>().unwrap();
    assert_eq!(config.mode, Mode::Cache);
    assert_eq!(config.format, Format::Json);
    assert_eq!(config.key, "{schema}:{table}:{key}");

    let spec = parse("type = \"redis\"\nurl = \"redis://h\"\nmode = \"stream\"\nmaxlen = 100");
    assert!(spec.validate().is_empty(), "{:?}", spec.validate());
    let caps = spec.capabilities();
    assert!(!caps.applies_state && !caps.needs_key && caps.accepts_raw);
}

#[test]
fn key_templates_must_let_a_truncate_find_the_table() {
    assert!(KeyTemplate::parse("{schema}:{table}:{key}").is_ok());
    assert!(KeyTemplate::parse("cache/{table}/{key.id}").is_ok());
    let cases = [
        ("{schema}:{table}", "must hold {key}"),
        ("{schema}:{key}", "must hold {table} before"),
        ("{key}:{table}", "must hold {table} before"),
        ("{table}{key}", "needs fixed text"),
        ("{op}:{table}:{key}", "must not hold {op}"),
        ("{tabel}:{key}", "unknown placeholder"),
    ];
    for (template, want) in cases {
        let err = KeyTemplate::parse(template).unwrap_err();
        assert!(err.contains(want), "{template}: {err}");
    }
}

#[test]
fn every_problem_is_reported_with_its_field() {
    let spec = parse(
        "type = \"redis\"\nurl = \"http://x\"\nkey = \"{table}\"\nmaxlen = 5\nversion_prefix = \"\"\nbatch_size = 0",
    );
    let problems = spec.validate();
    for field in ["url:", "key:", "maxlen:", "version_prefix:", "batch_size:"] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} missing from {problems:?}"
        );
    }
    let spec = parse(
        "type = \"redis\"\nurl = \"redis://h\"\nmode = \"stream\"\nformat = \"hash\"\nttl = \"1h\"\nstream = \"{prefix}\"",
    );
    let problems = spec.validate();
    for field in ["format:", "ttl:", "stream:"] {
        assert!(
            problems.iter().any(|p| p.starts_with(field)),
            "{field} missing from {problems:?}"
        );
    }
    let errs = parse_sink(
        "type = \"redis\"\nurl = \"redis://h\"\nformt = \"hash\""
            .parse()
            .unwrap(),
    )
    .unwrap_err();
    assert!(errs[0].contains("unknown field `formt`"), "{errs:?}");
}

#[test]
fn route_templates_are_checked_for_the_mode() {
    let spec = parse("type = \"redis\"\nurl = \"redis://h\"");
    assert!(
        spec.check_topic("{table}:{key}", TemplateUse::Change)
            .is_ok()
    );
    assert!(spec.check_topic("{table}", TemplateUse::Change).is_err());
    let spec = parse("type = \"redis\"\nurl = \"redis://h\"\nmode = \"stream\"");
    assert!(spec.check_topic("s:{table}", TemplateUse::Change).is_ok());
    assert!(spec.check_topic("{prefix}", TemplateUse::Message).is_err());
}

#[test]
fn passwords_never_show() {
    assert_eq!(
        redact_url("redis://user:s3cret@host:6379/0"),
        "redis://user:<redacted>@host:6379/0"
    );
    assert_eq!(
        redact_url("redis://:s3cret@host"),
        "redis://:<redacted>@host"
    );
    assert_eq!(redact_url("redis://host:6379"), "redis://host:6379");
    let spec =
        parse("type = \"redis\"\nurl = \"rediss://u:s3cret@host\"\npassword = \"other-secret\"");
    let shown = format!("{spec:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("other-secret"),
        "{shown}"
    );
}
