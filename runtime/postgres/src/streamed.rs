//! Transactions that pgoutput streams before they commit (protocol 2,
//! `source.streaming = true`), held until their commit or abort.
//!
//! Past `logical_decoding_work_mem` the walsender stops holding a large
//! transaction back until its commit and sends it in blocks, between
//! Stream Start and Stream Stop, interleaved with other transactions. Weir
//! must still hand on only committed changes, in commit order, so it
//! keeps each streamed transaction's messages as they arrived (undecoded:
//! an aborted one costs no decoding), in memory up to
//! `streaming.memory_limit` across all of them and in a file per
//! transaction past that, and replays them through the decoder at Stream
//! Commit, a bounded number at a time, so a transaction of any size
//! flows downstream in batches.
//!
//! A savepoint rolled back inside a streamed transaction arrives as a
//! Stream Abort of its subtransaction: its changes are dropped, in memory
//! at once, on disk when replaying. Schema messages are kept whatever
//! subtransaction sent them: pgoutput sends a relation once per streamed
//! transaction, and later changes rely on it.
//!
//! Nothing here survives the process: after a crash the slot's confirmed
//! position is before the transaction's commit, so the walsender streams
//! it again from its start, and the spill directory is emptied when a
//! stream opens.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use weir_core::Lsn;

/// Bookkeeping per message held in memory, beyond its bytes.
const ENTRY_OVERHEAD: usize = 48;

/// One message of a streamed transaction, without its xid field.
struct Entry {
    lsn: Lsn,
    /// The (sub)transaction that made the change.
    subxid: u32,
    message: Box<[u8]>,
}

/// A streamed transaction not yet committed or aborted.
#[derive(Default)]
struct Held {
    memory: Vec<Entry>,
    memory_bytes: usize,
    /// Entries written out, oldest first; they precede `memory`.
    spill: Option<Spill>,
    aborted: HashSet<u32>,
}

struct Spill {
    path: PathBuf,
    file: BufWriter<File>,
    entries: u64,
}

/// Every streamed transaction of one replication stream.
pub(crate) struct Streamed {
    dir: PathBuf,
    limit: usize,
    in_memory: usize,
    txns: HashMap<u32, Held>,
    /// The transaction of the open Stream Start block.
    current: Option<u32>,
}

/// What went wrong with the spill directory or a file in it.
pub(crate) type IoResult<T> = Result<T, String>;

fn io_err(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

impl Streamed {
    /// For a stream of `slot` by this process: spills go to
    /// `base/<slot>-<pid>-<n>`, `n` counting this process's streams.
    /// Directories left there for the slot by processes no longer running
    /// (killed) are removed.
    pub(crate) fn for_slot(base: &Path, slot: &str, limit: usize) -> IoResult<Streamed> {
        static STREAMS: AtomicU64 = AtomicU64::new(0);
        // Whether a process runs is only known here through /proc.
        if cfg!(target_os = "linux")
            && let Ok(entries) = std::fs::read_dir(base)
        {
            for e in entries.flatten() {
                let name = e.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix(slot)?.strip_prefix('-'))
                    .and_then(|rest| rest.split('-').next()?.parse::<u32>().ok())
                else {
                    continue;
                };
                if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let n = STREAMS.fetch_add(1, Ordering::Relaxed);
        Streamed::open(
            base.join(format!("{slot}-{}-{n}", std::process::id())),
            limit,
        )
    }

    /// Holds up to `limit` bytes in memory and spills to files in `dir`,
    /// which is emptied of an earlier run's files now, and created when
    /// first needed.
    pub(crate) fn open(dir: PathBuf, limit: usize) -> IoResult<Streamed> {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(|e| io_err("emptying the spill directory", &dir, e))?;
        }
        Ok(Streamed {
            dir,
            limit,
            in_memory: 0,
            txns: HashMap::new(),
            current: None,
        })
    }

    /// Whether any streamed transaction is still open.
    pub(crate) fn any_open(&self) -> bool {
        !self.txns.is_empty()
    }

    /// The xid of the open Stream Start block, if one is open.
    pub(crate) fn current(&self) -> Option<u32> {
        self.current
    }

    /// Stream Start of `xid`; `first` on its first block.
    pub(crate) fn start(&mut self, xid: u32, first: bool) -> Result<(), String> {
        if let Some(open) = self.current {
            return Err(format!(
                "STREAM START of xid {xid} inside the block of xid {open}"
            ));
        }
        if first {
            if self.txns.contains_key(&xid) {
                return Err(format!("a second first STREAM START of xid {xid}"));
            }
            self.txns.insert(xid, Held::default());
        } else if !self.txns.contains_key(&xid) {
            // Its first block came before this stream began: the
            // walsender streams a transaction again from its start.
            return Err(format!(
                "STREAM START continuing xid {xid}, whose first block never arrived"
            ));
        }
        self.current = Some(xid);
        Ok(())
    }

    /// Stream Stop: the open block ends.
    pub(crate) fn stop(&mut self) -> Result<(), String> {
        self.current
            .take()
            .map(|_| ())
            .ok_or_else(|| "STREAM STOP outside a stream block".to_owned())
    }

    /// Keeps one message of the open block (with its xid field removed),
    /// made by `subxid`.
    pub(crate) fn push(&mut self, lsn: Lsn, subxid: u32, message: Box<[u8]>) -> IoResult<()> {
        let xid = self
            .current
            .ok_or("a streamed change outside a stream block")?;
        let held = self
            .txns
            .get_mut(&xid)
            .ok_or_else(|| format!("a change for unknown streamed xid {xid}"))?;
        let size = message.len() + ENTRY_OVERHEAD;
        held.memory.push(Entry {
            lsn,
            subxid,
            message,
        });
        held.memory_bytes += size;
        self.in_memory += size;
        while self.in_memory > self.limit && self.spill_largest()? {}
        Ok(())
    }

    /// Writes the transaction holding the most memory out to its file;
    /// `false` when none holds any.
    fn spill_largest(&mut self) -> IoResult<bool> {
        let Some((&xid, _)) = self
            .txns
            .iter()
            .filter(|(_, h)| !h.memory.is_empty())
            .max_by_key(|(_, h)| h.memory_bytes)
        else {
            return Ok(false);
        };
        let dir = &self.dir;
        let held = self.txns.get_mut(&xid).unwrap_or_else(|| unreachable!());
        if held.spill.is_none() {
            create_private_dir(dir)?;
            let path = dir.join(format!("{xid}.spill"));
            let file = File::create(&path).map_err(|e| io_err("creating", &path, e))?;
            held.spill = Some(Spill {
                path,
                file: BufWriter::with_capacity(1 << 20, file),
                entries: 0,
            });
        }
        let spill = held.spill.as_mut().unwrap_or_else(|| unreachable!());
        for e in held.memory.drain(..) {
            if held.aborted.contains(&e.subxid) && !is_schema(&e.message) {
                continue;
            }
            let len = u32::try_from(e.message.len()).map_err(|_| "a message over 4 GiB")?;
            let mut head = [0u8; 16];
            head[..8].copy_from_slice(&e.lsn.0.to_be_bytes());
            head[8..12].copy_from_slice(&e.subxid.to_be_bytes());
            head[12..].copy_from_slice(&len.to_be_bytes());
            spill
                .file
                .write_all(&head)
                .and_then(|()| spill.file.write_all(&e.message))
                .map_err(|e| io_err("writing", &spill.path, e))?;
            spill.entries += 1;
        }
        self.in_memory -= held.memory_bytes;
        held.memory_bytes = 0;
        Ok(true)
    }

    /// Stream Abort of `subxid` of `xid`: the whole transaction when they
    /// are the same, else the changes of that subtransaction.
    pub(crate) fn abort(&mut self, xid: u32, subxid: u32) {
        if xid == subxid {
            if let Some(held) = self.txns.remove(&xid) {
                self.in_memory -= held.memory_bytes;
                if let Some(s) = held.spill {
                    drop(s.file);
                    let _ = std::fs::remove_file(&s.path);
                }
            }
            return;
        }
        let Some(held) = self.txns.get_mut(&xid) else {
            return;
        };
        held.aborted.insert(subxid);
        let before = held.memory_bytes;
        held.memory
            .retain(|e| e.subxid != subxid || is_schema(&e.message));
        held.memory_bytes = held
            .memory
            .iter()
            .map(|e| e.message.len() + ENTRY_OVERHEAD)
            .sum();
        self.in_memory -= before - held.memory_bytes;
    }

    /// Stream Commit of `xid`: its messages, in order, to replay.
    pub(crate) fn commit(&mut self, xid: u32) -> IoResult<Replay> {
        if self.current.is_some() {
            return Err(format!("STREAM COMMIT of xid {xid} inside a stream block"));
        }
        let held = self
            .txns
            .remove(&xid)
            .ok_or_else(|| format!("STREAM COMMIT of xid {xid}, which was never streamed"))?;
        self.in_memory -= held.memory_bytes;
        let file = match held.spill {
            Some(mut s) => {
                s.file.flush().map_err(|e| io_err("writing", &s.path, e))?;
                drop(s.file);
                let f = File::open(&s.path).map_err(|e| io_err("reading", &s.path, e))?;
                // Unlinked now: the open handle keeps it readable, and no
                // crash leaves it behind.
                let _ = std::fs::remove_file(&s.path);
                Some((BufReader::with_capacity(1 << 20, f), s.path, s.entries))
            }
            None => None,
        };
        Ok(Replay {
            file,
            memory: held.memory.into_iter(),
            aborted: held.aborted,
        })
    }
}

impl Drop for Streamed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Creates `dir` (and its parents) readable by this user only: it holds
/// rows of the captured tables.
fn create_private_dir(dir: &Path) -> IoResult<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
        .map_err(|e| io_err("creating the spill directory", dir, e))
}

/// Relation and Type messages: kept whichever subtransaction sent them.
fn is_schema(message: &[u8]) -> bool {
    matches!(message.first(), Some(b'R' | b'Y'))
}

/// A committed streamed transaction's messages, oldest first.
pub(crate) struct Replay {
    file: Option<(BufReader<File>, PathBuf, u64)>,
    memory: std::vec::IntoIter<Entry>,
    aborted: HashSet<u32>,
}

impl Replay {
    /// The next message to decode, with its position; `None` at the end.
    pub(crate) fn next(&mut self) -> IoResult<Option<(Lsn, Box<[u8]>)>> {
        loop {
            let entry = match &mut self.file {
                Some((_, _, 0)) => {
                    self.file = None;
                    continue;
                }
                Some((reader, path, left)) => {
                    let mut head = [0u8; 16];
                    reader
                        .read_exact(&mut head)
                        .map_err(|e| io_err("reading", path, e))?;
                    let be = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
                    let lsn = Lsn(be(&head[..8]));
                    let subxid = u32::from_be_bytes(head[8..12].try_into().unwrap_or_default());
                    let len = u32::from_be_bytes(head[12..].try_into().unwrap_or_default());
                    let mut message = vec![0u8; len as usize].into_boxed_slice();
                    reader
                        .read_exact(&mut message)
                        .map_err(|e| io_err("reading", path, e))?;
                    *left -= 1;
                    Entry {
                        lsn,
                        subxid,
                        message,
                    }
                }
                None => match self.memory.next() {
                    Some(e) => e,
                    None => return Ok(None),
                },
            };
            if self.aborted.contains(&entry.subxid) && !is_schema(&entry.message) {
                continue;
            }
            return Ok(Some((entry.lsn, entry.message)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(mut r: Replay) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((lsn, m)) = r.next().unwrap() {
            out.push((lsn.0, m.into_vec()));
        }
        out
    }

    fn dir(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("weir-streamed-{name}-{}", std::process::id()))
    }

    #[test]
    fn interleaved_transactions_replay_their_own_messages_in_order_across_the_spill() {
        let d = dir("interleaved");
        // A limit of two entries: the rest goes to disk.
        let mut s = Streamed::open(d.clone(), 2 * (ENTRY_OVERHEAD + 2)).unwrap();
        for (xid, first) in [(10, true), (11, true), (10, false), (11, false)] {
            s.start(xid, first).unwrap();
            for i in 0..3u8 {
                s.push(
                    Lsn(u64::from(xid) * 100 + u64::from(i)),
                    xid,
                    Box::from([b'I', i].as_slice()),
                )
                .unwrap();
            }
            s.stop().unwrap();
        }
        assert!(std::fs::read_dir(&d).unwrap().count() > 0, "spilled");
        let r11 = all(s.commit(11).unwrap());
        assert_eq!(r11.len(), 6);
        assert!(r11.iter().all(|(lsn, _)| lsn / 100 == 11));
        let r10 = all(s.commit(10).unwrap());
        assert_eq!(
            r10.iter().map(|(_, m)| m[1]).collect::<Vec<_>>(),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert!(!s.any_open());
        assert_eq!(s.in_memory, 0);
        drop(s);
        assert!(!d.exists(), "the directory goes with the stream");
    }

    #[test]
    fn a_rolled_back_subtransaction_leaves_its_schema_and_nothing_else() {
        let d = dir("subabort");
        for limit in [1 << 20, 1] {
            let mut s = Streamed::open(d.clone(), limit).unwrap();
            s.start(5, true).unwrap();
            s.push(Lsn(1), 5, b"Ia".as_slice().into()).unwrap();
            s.push(Lsn(2), 6, b"Rrel".as_slice().into()).unwrap();
            s.push(Lsn(3), 6, b"Ib".as_slice().into()).unwrap();
            s.push(Lsn(4), 5, b"Ic".as_slice().into()).unwrap();
            s.stop().unwrap();
            s.abort(5, 6);
            let got: Vec<Vec<u8>> = all(s.commit(5).unwrap()).into_iter().map(|e| e.1).collect();
            assert_eq!(
                got,
                vec![b"Ia".to_vec(), b"Rrel".to_vec(), b"Ic".to_vec()],
                "limit {limit}"
            );
        }
    }

    #[test]
    fn a_schema_kept_from_a_rolled_back_subtransaction_survives_a_later_spill() {
        let d = dir("subabort-spill");
        // Room for the first four entries; the later ones push all out.
        let mut s = Streamed::open(d, 4 * (ENTRY_OVERHEAD + 4)).unwrap();
        s.start(5, true).unwrap();
        s.push(Lsn(1), 5, b"Ia".as_slice().into()).unwrap();
        s.push(Lsn(2), 6, b"Rrel".as_slice().into()).unwrap();
        s.push(Lsn(3), 6, b"Ib".as_slice().into()).unwrap();
        s.stop().unwrap();
        s.abort(5, 6);
        s.start(5, false).unwrap();
        s.push(Lsn(4), 5, vec![b'I'; 64].into_boxed_slice())
            .unwrap();
        s.stop().unwrap();
        assert!(s.txns[&5].spill.is_some(), "spilled after the abort");
        let got: Vec<Vec<u8>> = all(s.commit(5).unwrap()).into_iter().map(|e| e.1).collect();
        assert_eq!(got, vec![b"Ia".to_vec(), b"Rrel".to_vec(), vec![b'I'; 64]]);
    }

    #[test]
    fn an_aborted_transaction_is_forgotten_with_its_file() {
        let d = dir("abort");
        let mut s = Streamed::open(d.clone(), 1).unwrap();
        s.start(7, true).unwrap();
        s.push(Lsn(1), 7, b"Ia".as_slice().into()).unwrap();
        s.stop().unwrap();
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1);
        s.abort(7, 7);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0);
        assert!(!s.any_open());
        assert!(s.commit(7).is_err(), "nothing to commit");
    }

    #[test]
    fn blocks_out_of_order_are_protocol_errors() {
        let mut s = Streamed::open(dir("order"), 1 << 20).unwrap();
        assert!(s.stop().is_err());
        assert!(s.start(3, false).is_err(), "a continuation without a start");
        assert!(
            s.push(Lsn(1), 3, b"I".as_slice().into()).is_err(),
            "outside a block"
        );
        s.start(3, true).unwrap();
        assert!(s.start(4, true).is_err(), "nested");
        assert!(s.commit(3).is_err(), "inside its block");
    }
}
