//! Appending batches to a file, durably.

use std::fs::{File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::path::Path;
use std::sync::Arc;

use weir_core::{Sink, SinkError, SinkPayload, SinkRecord};

use super::FileSinkConfig;
use weir_codec::{EncodeError, Encoder};

/// A sink that appends one line per record to a file and fsyncs each batch.
///
/// Open it with [`FileSink::open`]; see [`FileSinkConfig`] for what it writes.
pub struct FileSink {
    name: String,
    path: String,
    encoder: Encoder,
    /// The key and value of a Debezium event before its value is copied
    /// into `buf` (the file has no keys).
    /// The Debezium key, made on the way to the value and not written.
    scratch: Vec<u8>,
    target: Target,
    /// Set when a failed write could not be cut back off the file: the
    /// length to truncate to before the next write, so that a torn batch
    /// never sits in front of a later one.
    repair_to: Option<u64>,
    /// The encoded batch; reused so that steady-state writes do not allocate.
    buf: Vec<u8>,
}

enum Target {
    Stdout,
    File(Arc<File>),
}

impl FileSink {
    /// Opens (creating if needed) the file to append to, or standard output
    /// for `path = "-"`.
    ///
    /// A file that does not end in a newline was cut off mid-write by a
    /// crash: that partial line was never acknowledged (acknowledgement
    /// follows the fsync of whole lines) and will be written again, so it is
    /// truncated away, with a warning saying how many bytes were dropped.
    ///
    /// Fails with [`SinkError::Config`] when the configuration is invalid or
    /// the file's directory does not exist, and [`SinkError::Io`] when the
    /// file cannot be opened or repaired; messages name the sink and path.
    /// This does blocking file I/O; it is meant for start-up.
    pub fn open(name: &str, config: &FileSinkConfig) -> Result<FileSink, SinkError> {
        crate::registry::check_valid(name, config.validate())?;
        let target = if config.path == "-" {
            Target::Stdout
        } else {
            Target::File(Arc::new(open_file(name, &config.path)?))
        };
        Ok(FileSink {
            name: name.to_owned(),
            path: config.path.clone(),
            encoder: Encoder::new(config.encoding, config.debezium.as_ref()),
            scratch: Vec::new(),
            target,
            repair_to: None,
            buf: Vec::new(),
        })
    }

    fn io_error(&self, action: &str, e: io::Error) -> SinkError {
        io_error(&self.path, action, e)
    }
}

fn io_error(path: &str, action: &str, e: io::Error) -> SinkError {
    SinkError::Io(io::Error::new(e.kind(), format!("{action} {path}: {e}")))
}

fn open_file(name: &str, path_text: &str) -> Result<File, SinkError> {
    let path = Path::new(path_text);
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Creating the directory could hide a typo in the path; say what is missing instead.
    if !dir.is_dir() {
        return Err(SinkError::Config(format!(
            "cannot open {path_text}: directory {} does not exist",
            dir.display()
        )));
    }
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(|e| io_error(path_text, "opening", e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error(path_text, "reading the length of", e))?
        .len();
    let kept = complete_lines_len(&file, len).map_err(|e| io_error(path_text, "reading", e))?;
    if kept < len {
        file.set_len(kept)
            .and_then(|()| file.sync_data())
            .map_err(|e| io_error(path_text, "truncating the torn last line of", e))?;
        tracing::warn!(
            sink = name,
            path = path_text,
            dropped_bytes = len - kept,
            "dropped {} bytes of a partial last line left by an interrupted write; \
             those records were never acknowledged and will be written again",
            len - kept
        );
    }
    if !existed {
        // A new file's directory entry is only durable once the directory is synced.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_error(&dir.display().to_string(), "syncing directory", e))?;
    }
    Ok(file)
}

/// The length of the file up to and including its last newline.
fn complete_lines_len(file: &File, len: u64) -> io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = len;
    let mut chunk = vec![0u8; CHUNK.min(len) as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let part = &mut chunk[..(end - start) as usize];
        file.read_exact_at(part, start)?;
        if let Some(i) = part.iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

/// Appends the line of one record to `out`.
fn encode_line(
    record: &SinkRecord,
    encoder: &mut Encoder,
    scratch: &mut Vec<u8>,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    match &record.payload {
        SinkPayload::Change(event) => {
            encoder.encode_value(event, scratch, out)?;
            out.push(b'\n');
        }
        SinkPayload::Raw(message) => {
            if let Some(value) = &message.value {
                out.extend_from_slice(value);
                if value.last() != Some(&b'\n') {
                    out.push(b'\n');
                }
            }
        }
    }
    Ok(())
}

/// Writes a whole batch and fsyncs it. On failure, returns the error and,
/// when part of the batch may have reached the file, the length to cut the
/// file back to, so that the retry does not follow a torn line.
fn append_durably(
    file: &File,
    repair_to: Option<u64>,
    data: &[u8],
) -> Result<(), (io::Error, Option<u64>)> {
    if let Some(len) = repair_to {
        file.set_len(len).map_err(|e| (e, Some(len)))?;
    }
    let start = file.metadata().map_err(|e| (e, None))?.len();
    let mut writer = file;
    writer
        .write_all(data)
        .and_then(|()| file.sync_data())
        .map_err(|e| (e, Some(start)))
}

#[async_trait::async_trait]
impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn write(&mut self, batch: &[SinkRecord]) -> Result<(), SinkError> {
        self.buf.clear();
        for record in batch {
            encode_line(record, &mut self.encoder, &mut self.scratch, &mut self.buf)
                .map_err(|e| SinkError::Encode(e.to_string()))?;
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::take(&mut self.buf);
        // fsync takes milliseconds: keep it off the async worker threads.
        match &mut self.target {
            Target::Stdout => {
                let (data, result) = tokio::task::spawn_blocking(move || {
                    let mut out = io::stdout().lock();
                    let result = out.write_all(&data).and_then(|()| out.flush());
                    (data, result)
                })
                .await
                .map_err(|e| self.io_error("writing", io::Error::other(e.to_string())))?;
                self.buf = data;
                result.map_err(|e| self.io_error("writing", e))
            }
            Target::File(file) => {
                let file = Arc::clone(file);
                let repair_to = self.repair_to;
                let (data, result) = tokio::task::spawn_blocking(move || {
                    let result = append_durably(&file, repair_to, &data).map_err(|(e, cut_to)| {
                        // When cutting back fails too, the next write tries again first.
                        (e, cut_to.filter(|&len| file.set_len(len).is_err()))
                    });
                    (data, result)
                })
                .await
                .map_err(|e| self.io_error("writing", io::Error::other(e.to_string())))?;
                self.buf = data;
                match result {
                    Ok(()) => {
                        self.repair_to = None;
                        Ok(())
                    }
                    Err((e, still_to_repair)) => {
                        self.repair_to = still_to_repair;
                        Err(self.io_error("writing", e))
                    }
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), SinkError> {
        match &self.target {
            Target::Stdout => io::stdout()
                .flush()
                .map_err(|e| self.io_error("flushing", e)),
            Target::File(file) => {
                let file = Arc::clone(file);
                tokio::task::spawn_blocking(move || file.sync_data())
                    .await
                    .map_err(|e| self.io_error("syncing", io::Error::other(e.to_string())))?
                    .map_err(|e| self.io_error("syncing", e))
            }
        }
    }
}
