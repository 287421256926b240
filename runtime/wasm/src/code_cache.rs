//! The compiled-code cache on disk.
//!
//! Weir runs what it finds here as native code, outside the WebAssembly
//! sandbox, so a file planted in the cache would run with Weir's rights.
//! Hence:
//!
//! * the directory is created `0700` and refused when another user owns it
//!   or when group or others may write to it;
//! * every file carries an HMAC-SHA256, over its name and contents, under a
//!   key made on first use and kept beside the files (`key`, `0600`): a file
//!   whose MAC does not verify is deleted and its component compiled again,
//!   never deserialized;
//! * files are written to a fresh temporary file (`O_EXCL`) and renamed
//!   into place, so they are never half-written and never written through a
//!   planted link;
//! * the directory is kept under a size cap, least recently used first out.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// The length of the key and of each file's MAC, in bytes.
const MAC_LEN: usize = 32;
/// The name of the key file in the cache directory.
const KEY_FILE: &str = "key";
/// Cache files end with this; nothing else in the directory is counted or
/// trimmed.
const EXTENSION: &str = "cwasm";

/// A cache directory that passed its checks, and its key.
pub(crate) struct CodeCache {
    dir: PathBuf,
    key: [u8; MAC_LEN],
    max_bytes: u64,
}

impl CodeCache {
    /// Opens (creating it if missing) the cache in `dir`, kept under
    /// `max_bytes`. Fails, naming the directory, when it or its key is not
    /// safe to use.
    pub(crate) fn open(dir: PathBuf, max_bytes: u64) -> Result<Self, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| {
                format!(
                    "cannot create the compiled-plugin cache {}: {e}",
                    dir.display()
                )
            })?;
        check_private(&dir, true, current_uid())?;
        let key = load_key(&dir)?;
        Ok(CodeCache {
            dir,
            key,
            max_bytes,
        })
    }

    /// The directory, for messages.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn mac(&self, name: &str, code: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length works");
        mac.update(name.as_bytes());
        mac.update(&[0]);
        mac.update(code);
        mac
    }

    /// The compiled code stored as `name`, if there is a file of that name
    /// and its MAC verifies. A file that does not verify is deleted.
    pub(crate) fn get(&self, name: &str) -> Option<Vec<u8>> {
        let path = self.dir.join(name);
        let mut data = match fs::read(&path) {
            Ok(data) => data,
            Err(e) if e.kind() == ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read a compiled plugin in the cache: {e}");
                return None;
            }
        };
        let verified = data.len() >= MAC_LEN && {
            let (tag, code) = data.split_at(MAC_LEN);
            self.mac(name, code).verify_slice(tag).is_ok()
        };
        if !verified {
            tracing::warn!(
                path = %path.display(),
                "a file in the compiled-plugin cache does not carry this installation's MAC \
                 (it was not written by this Weir, or was changed since): deleting it and compiling again"
            );
            self.remove(&path);
            return None;
        }
        // Touched, so trimming removes what was used least recently.
        if let Err(e) = File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
        {
            tracing::debug!(path = %path.display(), "cannot touch a cached compiled plugin: {e}");
        }
        data.drain(..MAC_LEN);
        Some(data)
    }

    /// Stores `code` as `name`, then trims the cache to its cap. Failing to
    /// store only costs a compile later.
    pub(crate) fn put(&self, name: &str, code: &[u8]) {
        let path = self.dir.join(name);
        if let Err(e) = self.write(&path, name, code) {
            tracing::warn!(path = %path.display(), "cannot store a compiled plugin: {e}");
            return;
        }
        self.trim();
    }

    fn write(&self, path: &Path, name: &str, code: &[u8]) -> std::io::Result<()> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let tmp = self.dir.join(format!(
            ".{name}.{}-{}.tmp",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        ));
        let tag = self.mac(name, code).finalize().into_bytes();
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| {
                file.write_all(&tag)?;
                file.write_all(code)
            })
            .and_then(|()| fs::rename(&tmp, path));
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    /// Deletes cache files, least recently used first, until they fit
    /// under the cap.
    fn trim(&self) {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "cannot list the compiled-plugin cache: {e}");
                return;
            }
        };
        let mut files: Vec<(SystemTime, u64, PathBuf)> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|e| e == EXTENSION))
            .filter_map(|entry| {
                // Not following links: only files of the cache count.
                let meta = entry.metadata().ok()?;
                if !meta.is_file() {
                    return None;
                }
                Some((meta.modified().ok()?, meta.len(), entry.path()))
            })
            .collect();
        let mut total: u64 = files.iter().map(|(_, len, _)| len).sum();
        if total <= self.max_bytes {
            return;
        }
        files.sort();
        for (_, len, path) in files {
            if total <= self.max_bytes {
                break;
            }
            tracing::debug!(path = %path.display(), "trimming the compiled-plugin cache");
            self.remove(&path);
            total -= len;
        }
    }

    fn remove(&self, path: &Path) {
        if let Err(e) = fs::remove_file(path)
            && e.kind() != ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), "cannot delete a file in the compiled-plugin cache: {e}");
        }
    }
}

/// The effective user id of this process.
fn current_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[allow(unsafe_code)]
    unsafe {
        libc::geteuid()
    }
}

/// Checks that `path` (the cache directory, or its key) belongs to `uid`
/// and that no one else may write to it (or, for the key, read it).
fn check_private(path: &Path, is_dir: bool, uid: u32) -> Result<(), String> {
    let what = if is_dir {
        "the compiled-plugin cache"
    } else {
        "the compiled-plugin cache key"
    };
    let meta =
        fs::metadata(path).map_err(|e| format!("cannot use {what} {}: {e}", path.display()))?;
    if meta.is_dir() != is_dir {
        return Err(format!(
            "{what} {} is not a {}",
            path.display(),
            if is_dir { "directory" } else { "file" }
        ));
    }
    if meta.uid() != uid {
        return Err(format!(
            "{what} {} belongs to user id {}, not to the user Weir runs as ({uid}); Weir runs the \
             code kept there, so it must be Weir's own: remove it, or point plugins.cache_dir elsewhere",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o777;
    let (forbidden, fix) = if is_dir {
        (0o022, "chmod 700")
    } else {
        (0o077, "chmod 600")
    };
    if mode & forbidden != 0 {
        return Err(format!(
            "{what} {} has mode {mode:03o}: others may {} it, and Weir runs the code kept there; \
             run `{fix} {}`",
            path.display(),
            if is_dir { "write to" } else { "read" },
            path.display()
        ));
    }
    Ok(())
}

/// Reads the cache's key, making it first if there is none. A new key is
/// written to a temporary file and linked into place, so a reader never
/// sees a half-written one and two processes cannot both make one.
fn load_key(dir: &Path) -> Result<[u8; MAC_LEN], String> {
    let path = dir.join(KEY_FILE);
    if !path.exists() {
        let mut key = [0u8; MAC_LEN];
        rand::rng().fill_bytes(&mut key);
        let tmp = dir.join(format!(".{KEY_FILE}.{}.tmp", std::process::id()));
        let made = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .and_then(|mut file| file.write_all(&key))
            .and_then(|()| match fs::hard_link(&tmp, &path) {
                // Another process made one meanwhile: use that.
                Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
                other => other,
            });
        let _ = fs::remove_file(&tmp);
        made.map_err(|e| {
            format!(
                "cannot create the compiled-plugin cache key {}: {e}",
                path.display()
            )
        })?;
    }
    check_private(&path, false, current_uid())?;
    let key = fs::read(&path).map_err(|e| {
        format!(
            "cannot read the compiled-plugin cache key {}: {e}",
            path.display()
        )
    })?;
    key.try_into().map_err(|key: Vec<u8>| {
        format!(
            "the compiled-plugin cache key {} holds {} bytes, not {MAC_LEN}: delete it (the cache \
             is then compiled again)",
            path.display(),
            key.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    #[test]
    fn the_directory_and_key_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("a/compiled");
        CodeCache::open(cache.clone(), 1 << 20).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&cache), 0o700);
        assert_eq!(mode(&cache.join(KEY_FILE)), 0o600);

        // The key is kept: what one run stored, the next one reads.
        let first = CodeCache::open(cache.clone(), 1 << 20).unwrap();
        first.put("x.cwasm", b"code");
        let second = CodeCache::open(cache.clone(), 1 << 20).unwrap();
        assert_eq!(second.get("x.cwasm").unwrap(), b"code");

        fs::set_permissions(&cache, fs::Permissions::from_mode(0o777)).unwrap();
        let err = CodeCache::open(cache.clone(), 1 << 20).err().unwrap();
        assert!(err.contains(&cache.display().to_string()), "{err}");
        assert!(
            err.contains("mode 777") && err.contains("chmod 700"),
            "{err}"
        );
        fs::set_permissions(&cache, fs::Permissions::from_mode(0o700)).unwrap();

        let key = cache.join(KEY_FILE);
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = CodeCache::open(cache.clone(), 1 << 20).err().unwrap();
        assert!(err.contains("key") && err.contains("chmod 600"), "{err}");
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();

        // Owned by someone else: refused, naming the directory.
        let other = current_uid().wrapping_add(1);
        let err = check_private(&cache, true, other).unwrap_err();
        assert!(err.contains(&cache.display().to_string()), "{err}");
        assert!(err.contains("belongs to user id"), "{err}");
    }

    #[test]
    fn files_without_the_mac_are_deleted_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CodeCache::open(dir.path().into(), 1 << 20).unwrap();
        cache.put("a.cwasm", b"genuine");
        assert_eq!(cache.get("a.cwasm").unwrap(), b"genuine");

        // The same bytes under another name: the MAC covers the name.
        let genuine = fs::read(dir.path().join("a.cwasm")).unwrap();
        fs::write(dir.path().join("b.cwasm"), &genuine).unwrap();
        assert_eq!(cache.get("b.cwasm"), None);
        assert!(!dir.path().join("b.cwasm").exists());

        // A changed file, a short one, one under another key.
        let mut changed = genuine.clone();
        *changed.last_mut().unwrap() ^= 1;
        for planted in [
            changed,
            b"short".to_vec(),
            [[7u8; MAC_LEN].as_slice(), b"genuine"].concat(),
        ] {
            fs::write(dir.path().join("a.cwasm"), &planted).unwrap();
            assert_eq!(cache.get("a.cwasm"), None);
            assert!(!dir.path().join("a.cwasm").exists());
        }
    }

    #[test]
    fn the_cache_is_trimmed_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        // Each file is 32 + 100 bytes: three fit, four do not.
        let cache = CodeCache::open(dir.path().into(), 3 * 132 + 10).unwrap();
        let age = |name: &str, secs: u64| {
            File::options()
                .write(true)
                .open(dir.path().join(name))
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(secs))
                .unwrap();
        };
        for (name, secs) in [("1.cwasm", 400), ("2.cwasm", 300), ("3.cwasm", 200)] {
            cache.put(name, &[0; 100]);
            age(name, secs);
        }
        // Using the oldest makes it the newest.
        assert!(cache.get("1.cwasm").is_some());
        cache.put("4.cwasm", &[0; 100]);
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["1.cwasm", "3.cwasm", "4.cwasm", KEY_FILE]);
    }
}
