//! What plugins answered, as people read it: the JSON `weir plugin test`
//! prints for each change, and how a shadow version's answers differ from
//! the running version's ([`ShadowReport`], served at
//! `GET /plugins/NAME/shadow`).
//!
//! Both use the same words for an answer, so what a plugin author sees in a
//! test run is what an operator sees in a shadow report.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use base64::Engine as _;
use serde::Serialize;
use weir_codec::JsonEncoder;
use weir_core::{ChangeEvent, Destination, RawMessage};
use weir_wasm::{Emit, EmitPayload, Outcome, Transaction};

/// How many differing answers a shadow report keeps, the first ones: enough
/// to see what a new version does differently, and bounded however long it
/// runs.
pub const SAMPLES_KEPT: usize = 10;

/// A transform's answer as JSON object fields, without the braces:
/// `"outcome":"keep"`, `"outcome":"drop"`,
/// `"outcome":"replace","emits":[…]` or `"outcome":"fail","error":"…"`.
pub(crate) fn outcome_fields(
    answer: &Result<Outcome, String>,
    encoder: &mut JsonEncoder,
) -> String {
    match answer {
        Ok(Outcome::Keep) => r#""outcome":"keep""#.to_owned(),
        Ok(Outcome::Drop) => r#""outcome":"drop""#.to_owned(),
        Ok(Outcome::Replace(emits)) => format!(
            r#""outcome":"replace","emits":{}"#,
            emits_json(emits, encoder)
        ),
        Ok(Outcome::Fail { message, .. }) | Err(message) => failure_fields(message),
    }
}

/// A router's answer as JSON object fields: `"destinations":[…]` or
/// `"outcome":"fail","error":"…"`.
pub(crate) fn route_fields(answer: &Result<Vec<Destination>, String>) -> String {
    match answer {
        Ok(destinations) => {
            let list: Vec<String> = destinations.iter().map(destination_json).collect();
            format!(r#""destinations":[{}]"#, list.join(","))
        }
        Err(message) => failure_fields(message),
    }
}

/// A failure as JSON object fields.
pub(crate) fn failure_fields(message: &str) -> String {
    format!(r#""outcome":"fail","error":{}"#, string(message))
}

/// `text` as a JSON string.
pub(crate) fn string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

pub(crate) fn destination_json(destination: &Destination) -> String {
    format!(
        r#"{{"sink":{},"topic":{}}}"#,
        string(&destination.sink),
        destination
            .topic
            .as_deref()
            .map_or("null".to_owned(), string)
    )
}

pub(crate) fn emits_json(emits: &[Emit], encoder: &mut JsonEncoder) -> String {
    let list: Vec<String> = emits.iter().map(|e| emit_json(e, encoder)).collect();
    format!("[{}]", list.join(","))
}

pub(crate) fn emit_json(emit: &Emit, encoder: &mut JsonEncoder) -> String {
    let destination = emit
        .destination
        .as_ref()
        .map_or("null".to_owned(), destination_json);
    match &emit.payload {
        EmitPayload::Change(event) => {
            let mut envelope = Vec::new();
            match encoder.encode(event, &mut envelope) {
                // The encoder writes UTF-8 JSON.
                Ok(()) => format!(
                    r#"{{"destination":{destination},"change":{}}}"#,
                    String::from_utf8_lossy(&envelope)
                ),
                Err(e) => format!(
                    r#"{{"destination":{destination},"change":null,"error":{}}}"#,
                    string(&format!("a sink could not encode this change: {e}"))
                ),
            }
        }
        EmitPayload::Raw(raw) => {
            format!(r#"{{"destination":{destination},"raw":{}}}"#, raw_json(raw))
        }
    }
}

pub(crate) fn raw_json(raw: &RawMessage) -> String {
    let headers: Vec<String> = raw
        .headers
        .iter()
        .map(|(name, value)| format!("{}:{}", string(name), bytes_json(Some(value))))
        .collect();
    format!(
        r#"{{"key":{},"value":{},"headers":{{{}}}}}"#,
        bytes_json(raw.key.as_deref()),
        bytes_json(raw.value.as_deref()),
        headers.join(",")
    )
}

/// Bytes as a string when they are UTF-8 text, else as `{"base64":...}`,
/// so either reads back exactly.
pub(crate) fn bytes_json(bytes: Option<&[u8]>) -> String {
    match bytes {
        None => "null".to_owned(),
        Some(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => string(text),
            Err(_) => format!(
                r#"{{"base64":"{}"}}"#,
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
        },
    }
}

/// How a shadow version's answer for one change (or one transaction's
/// commit hook) compares with the running version's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// The same would be delivered.
    Same,
    /// Something else would be delivered (or something where the running
    /// version delivers nothing).
    Changed,
    /// Nothing would be delivered where the running version delivers
    /// something.
    Dropped,
    /// The shadow failed on it: trapped, ran out of time or memory, or
    /// rejected the change.
    Failed,
}

impl Verdict {
    /// Compares two transforms' answers for `event`. A `keep` and a
    /// `replace` by the unchanged event deliver the same; so do a `drop`
    /// and a `replace` by nothing.
    pub fn of_outcomes(
        event: &ChangeEvent,
        running: &Result<Outcome, String>,
        shadow: &Result<Outcome, String>,
    ) -> Verdict {
        let shadow = match shadow {
            Ok(Outcome::Fail { .. }) | Err(_) => return Verdict::Failed,
            Ok(s) => s,
        };
        let running = match running {
            Ok(Outcome::Fail { .. }) | Err(_) => return Verdict::Changed,
            Ok(r) => r,
        };
        let nothing = |o: &Outcome| match o {
            Outcome::Drop => true,
            Outcome::Replace(emits) => emits.is_empty(),
            _ => false,
        };
        let kept = |o: &Outcome| match o {
            Outcome::Keep => true,
            Outcome::Replace(emits) => matches!(
                emits.as_slice(),
                [Emit { destination: None, payload: EmitPayload::Change(e) }] if e == event
            ),
            _ => false,
        };
        if running == shadow || nothing(running) && nothing(shadow) || kept(running) && kept(shadow)
        {
            Verdict::Same
        } else if nothing(shadow) {
            Verdict::Dropped
        } else {
            Verdict::Changed
        }
    }

    /// Compares two routers' answers.
    pub fn of_routes(
        running: &Result<Vec<Destination>, String>,
        shadow: &Result<Vec<Destination>, String>,
    ) -> Verdict {
        match (running, shadow) {
            (_, Err(_)) => Verdict::Failed,
            (Ok(r), Ok(s)) if r == s => Verdict::Same,
            (Ok(r), Ok(s)) if s.is_empty() && !r.is_empty() => Verdict::Dropped,
            _ => Verdict::Changed,
        }
    }

    /// Compares what two versions' commit hooks emitted for a transaction
    /// (nothing, for a version without the hook).
    pub fn of_commits(running: &[Emit], shadow: &Result<Vec<Emit>, String>) -> Verdict {
        match shadow {
            Err(_) => Verdict::Failed,
            Ok(s) if s == running => Verdict::Same,
            Ok(s) if s.is_empty() => Verdict::Dropped,
            Ok(_) => Verdict::Changed,
        }
    }
}

/// Answers counted by verdict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Answers the two versions agree on.
    pub same: u64,
    /// The shadow would deliver something else.
    pub changed: u64,
    /// The shadow would deliver nothing where the running version delivers.
    pub dropped: u64,
    /// The shadow failed.
    pub failed: u64,
    /// Changes the shadow never saw: it fell behind the running version,
    /// and batches were left out (never delivery held up) until the next
    /// transaction boundary.
    pub skipped: u64,
}

/// One answer the versions disagree on, as `GET /plugins/NAME/shadow`
/// shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// How they differ.
    pub verdict: Verdict,
    /// The change both were given, in the native envelope; absent for a
    /// commit hook's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change: Option<serde_json::Value>,
    /// The transaction, for a commit hook's answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<serde_json::Value>,
    /// The running version and its answer.
    pub running: serde_json::Value,
    /// The shadow's answer.
    pub shadow: serde_json::Value,
}

impl Sample {
    /// A sample of a change: `running` and `shadow` are answers as object
    /// fields ([`outcome_fields`], [`route_fields`]).
    pub(crate) fn of_change(
        verdict: Verdict,
        event: &ChangeEvent,
        running_version: &str,
        running: &str,
        shadow: &str,
        encoder: &mut JsonEncoder,
    ) -> Sample {
        let mut envelope = Vec::new();
        let change = match encoder.encode(event, &mut envelope) {
            Ok(()) => serde_json::from_slice(&envelope).unwrap_or_default(),
            Err(e) => serde_json::json!({ "error": format!("cannot encode the change: {e}") }),
        };
        Sample {
            verdict,
            change: Some(change),
            commit: None,
            running: answer_value(Some(running_version), running),
            shadow: answer_value(None, shadow),
        }
    }

    /// A sample of a transaction's commit hooks.
    pub(crate) fn of_commit(
        verdict: Verdict,
        txn: &Transaction,
        running_version: &str,
        running: &[Emit],
        shadow: &Result<Vec<Emit>, String>,
        encoder: &mut JsonEncoder,
    ) -> Sample {
        let shadow = match shadow {
            Ok(emits) => format!(r#""emits":{}"#, emits_json(emits, encoder)),
            Err(message) => failure_fields(message),
        };
        Sample {
            verdict,
            change: None,
            commit: Some(serde_json::json!({
                "xid": txn.xid,
                "commit_lsn": txn.commit_lsn.to_string(),
            })),
            running: answer_value(
                Some(running_version),
                &format!(r#""emits":{}"#, emits_json(running, encoder)),
            ),
            shadow: answer_value(None, &shadow),
        }
    }
}

/// Object fields as a JSON value, with the version answering first when
/// named.
fn answer_value(version: Option<&str>, fields: &str) -> serde_json::Value {
    let version = version.map_or(String::new(), |v| format!(r#""version":{},"#, string(v)));
    serde_json::from_str(&format!("{{{version}{fields}}}")).unwrap_or_default()
}

/// Where a shadow version is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShadowState {
    /// Validated; starts at the next transaction boundary.
    Waiting,
    /// Running beside the running version.
    Running,
    /// Its thread ended on a failure (see `last_failure`); it runs no more.
    Stopped,
}

/// What a shadow version has done so far: shared by the thread that runs
/// it and the admin endpoint that reports it.
#[derive(Debug)]
pub struct ShadowReport {
    plugin: String,
    version: String,
    tally: Mutex<Tally>,
    /// Counted apart from the rest: the processor thread counts these, and
    /// must never wait for the lock the shadow's thread and the admin
    /// endpoint take.
    skipped: AtomicU64,
    /// Set when the shadow is to stop (discarded, replaced, promoted): its
    /// thread ends after the call it is in.
    stop: AtomicBool,
}

/// The changing part of a [`ShadowReport`].
#[derive(Debug)]
pub struct Tally {
    state: ShadowState,
    /// All but `skipped`, which the report keeps apart.
    counts: Counts,
    samples: Vec<Sample>,
    /// The last failure of the shadow itself, not blamed on one change
    /// (its `init` failing, say).
    last_failure: Option<String>,
}

impl ShadowReport {
    /// The report of a new shadow `version` of `plugin`, waiting to start.
    pub fn new(plugin: &str, version: &str) -> Self {
        ShadowReport {
            plugin: plugin.to_owned(),
            version: version.to_owned(),
            tally: Mutex::new(Tally {
                state: ShadowState::Waiting,
                counts: Counts::default(),
                samples: Vec::new(),
                last_failure: None,
            }),
            skipped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    /// The shadow's version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The plugin it is a version of.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The counts and samples, to update or read.
    pub fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The counts so far.
    pub fn counts(&self) -> Counts {
        let counts = self.tally().counts;
        Counts {
            skipped: self.skipped.load(Ordering::Relaxed),
            ..counts
        }
    }

    /// Counts changes the shadow never saw.
    pub fn skipped(&self, changes: u64) {
        self.skipped.fetch_add(changes, Ordering::Relaxed);
    }

    /// Tells the shadow's thread to end after the call it is in.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether the shadow is to end (or has ended).
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// The shadow's thread ended on `failure`.
    pub fn ended(&self, failure: String) {
        self.stop();
        let mut tally = self.tally();
        tally.state = ShadowState::Stopped;
        tally.last_failure = Some(failure);
    }

    /// State and counts, as `/plugins` and `/status` list them.
    pub fn summary(&self) -> serde_json::Value {
        let counts = self.counts();
        let tally = self.tally();
        serde_json::json!({
            "version": self.version,
            "state": tally.state,
            "counts": counts,
            "last_failure": tally.last_failure,
        })
    }

    /// Everything, with the samples, for `GET /plugins/NAME/shadow`.
    pub fn report(&self) -> serde_json::Value {
        let counts = self.counts();
        let tally = self.tally();
        serde_json::json!({
            "plugin": self.plugin,
            "version": self.version,
            "state": tally.state,
            "counts": counts,
            "samples": tally.samples,
            "last_failure": tally.last_failure,
        })
    }
}

impl Tally {
    /// It started running beside the running version.
    pub fn started(&mut self) {
        self.state = ShadowState::Running;
    }

    /// How many more samples are kept.
    pub fn room_for_samples(&self) -> usize {
        SAMPLES_KEPT.saturating_sub(self.samples.len())
    }

    /// Counts verdicts, and keeps `samples` of the differences as far as
    /// there is room.
    pub fn count(&mut self, verdicts: &[Verdict], samples: Vec<Sample>) {
        for verdict in verdicts {
            let n = match verdict {
                Verdict::Same => &mut self.counts.same,
                Verdict::Changed => &mut self.counts.changed,
                Verdict::Dropped => &mut self.counts.dropped,
                Verdict::Failed => &mut self.counts.failed,
            };
            *n += 1;
        }
        let room = self.room_for_samples();
        self.samples.extend(samples.into_iter().take(room));
    }

    /// Records a failure of the shadow no change is blamed for.
    pub fn failure(&mut self, error: String) {
        self.last_failure = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_core::SourceInfo;

    #[test]
    fn raw_bytes_are_text_or_base64() {
        let raw = RawMessage {
            key: Some(b"k\"1".to_vec()),
            value: Some(vec![0xff, 0x00]),
            headers: vec![("h".into(), b"v".to_vec())],
            source: SourceInfo::default(),
        };
        assert_eq!(
            raw_json(&raw),
            r#"{"key":"k\"1","value":{"base64":"/wA="},"headers":{"h":"v"}}"#
        );
        let emit = Emit {
            destination: Some(Destination {
                sink: "kafka".into(),
                topic: None,
            }),
            payload: EmitPayload::Raw(RawMessage {
                key: None,
                value: None,
                headers: Vec::new(),
                source: SourceInfo::default(),
            }),
        };
        let json: serde_json::Value =
            serde_json::from_str(&emits_json(&[emit], &mut JsonEncoder::new())).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{
                "destination": {"sink": "kafka", "topic": null},
                "raw": {"key": null, "value": null, "headers": {}},
            }])
        );
    }

    fn event(seq: u32) -> ChangeEvent {
        ChangeEvent {
            op: weir_core::Op::Insert,
            table: None,
            before: None,
            after: None,
            message: None,
            source: SourceInfo {
                seq,
                ..SourceInfo::default()
            },
            txn: weir_core::TxnId(1),
        }
    }

    #[test]
    fn answers_that_deliver_the_same_are_the_same() {
        let e = event(1);
        let replaced_by = |event: ChangeEvent, destination: Option<Destination>| {
            Ok(Outcome::Replace(vec![Emit {
                destination,
                payload: EmitPayload::Change(event),
            }]))
        };
        let keep = Ok(Outcome::Keep);
        let drop = Ok(Outcome::Drop);
        let fail = Ok(Outcome::Fail {
            message: "no".into(),
            retryable: false,
        });
        let v = |r: &Result<Outcome, String>, s: &Result<Outcome, String>| {
            Verdict::of_outcomes(&e, r, s)
        };
        assert_eq!(v(&keep, &keep), Verdict::Same);
        assert_eq!(v(&keep, &replaced_by(e.clone(), None)), Verdict::Same);
        assert_eq!(v(&drop, &Ok(Outcome::Replace(Vec::new()))), Verdict::Same);
        assert_eq!(v(&keep, &replaced_by(event(2), None)), Verdict::Changed);
        let elsewhere = Destination {
            sink: "s".into(),
            topic: None,
        };
        assert_eq!(
            v(&keep, &replaced_by(e.clone(), Some(elsewhere))),
            Verdict::Changed
        );
        assert_eq!(v(&keep, &drop), Verdict::Dropped);
        assert_eq!(v(&drop, &keep), Verdict::Changed);
        assert_eq!(v(&keep, &fail), Verdict::Failed);
        assert_eq!(v(&keep, &Err("trap".into())), Verdict::Failed);
        assert_eq!(v(&fail, &keep), Verdict::Changed);

        let to = |sinks: &[&str]| {
            Ok(sinks
                .iter()
                .map(|s| Destination {
                    sink: (*s).into(),
                    topic: None,
                })
                .collect::<Vec<_>>())
        };
        assert_eq!(Verdict::of_routes(&to(&["a"]), &to(&["a"])), Verdict::Same);
        assert_eq!(
            Verdict::of_routes(&to(&["a"]), &to(&["b"])),
            Verdict::Changed
        );
        assert_eq!(Verdict::of_routes(&to(&["a"]), &to(&[])), Verdict::Dropped);
        assert_eq!(
            Verdict::of_routes(&to(&["a"]), &Err("x".into())),
            Verdict::Failed
        );
    }

    #[test]
    fn a_report_keeps_the_first_differences_and_counts_all() {
        let report = ShadowReport::new("p", "abc");
        let mut encoder = JsonEncoder::new();
        for i in 0..25u32 {
            let verdict = if i % 2 == 0 {
                Verdict::Changed
            } else {
                Verdict::Same
            };
            let sample = Sample::of_change(
                verdict,
                &event(i),
                "old",
                r#""outcome":"keep""#,
                r#""outcome":"drop""#,
                &mut encoder,
            );
            let samples = if verdict == Verdict::Same {
                Vec::new()
            } else {
                vec![sample]
            };
            report.tally().count(&[verdict], samples);
        }
        report.skipped(3);
        let json = report.report();
        assert_eq!(json["counts"]["changed"], 13);
        assert_eq!(json["counts"]["same"], 12);
        assert_eq!(json["counts"]["skipped"], 3);
        assert_eq!(json["state"], "waiting");
        let samples = json["samples"].as_array().unwrap();
        assert_eq!(samples.len(), SAMPLES_KEPT);
        assert_eq!(samples[1]["change"]["source"]["seq"], 2);
        assert_eq!(
            samples[0]["running"],
            serde_json::json!({"version": "old", "outcome": "keep"})
        );
        assert_eq!(samples[0]["shadow"], serde_json::json!({"outcome": "drop"}));
    }
}
