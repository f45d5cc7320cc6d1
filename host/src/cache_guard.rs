//! Integrity of the compiled-artifact cache. wasmtime loads a cache entry
//! as native code and runs it; it checks nothing of what it reads. So the
//! host keeps a MAC of every entry it trusts, keyed by a secret only the
//! cache's owner can read, and checks it before anything is compiled.
//!
//! Invariants: an entry is loaded only if its MAC — HMAC-SHA256 over its
//! path in the cache and its bytes — matches (an entry changed on disk, or
//! another entry's bytes copied under its name, is deleted before wasmtime
//! can read it, and the component is compiled again); an entry the host did
//! not record (written by something else) is deleted the same way; a cache
//! directory that other users may write is refused at start.
//!
//! Layout: `CACHE/wasmhost-integrity/v1/key` (32 random bytes, mode 0600)
//! and one MAC file per entry in the same directory, named by a hash of the
//! entry's path. (Names without a dot, two levels down, like wasmtime's own
//! entries: its cleanup deletes every file it does not recognise at the top
//! two levels of the cache.)

use crate::files::FileStamp;
use anyhow::{bail, Context, Result};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The directory of the key and the MACs, under the cache directory.
const INTEGRITY_DIR: &str = "wasmhost-integrity/v1";

/// Checks and records the MACs of one cache directory's entries.
pub struct CacheGuard {
    root: PathBuf,
    integrity: PathBuf,
    key: [u8; 32],
    /// Entries whose MAC matched, as they were on disk then.
    verified: Mutex<HashMap<PathBuf, FileStamp>>,
}

impl CacheGuard {
    /// Opens the guard of `cache_dir` (created mode 0700 when missing),
    /// refusing a directory other users may write, and checks every entry.
    pub fn open(cache_dir: &Path) -> Result<Self> {
        create_private_dir(cache_dir)?;
        check_private(cache_dir)?;
        let integrity = cache_dir.join(INTEGRITY_DIR);
        create_private_dir(&integrity)?;
        check_private(&integrity)?;
        let key = load_or_create_key(&integrity.join("key"))?;
        let guard = Self {
            root: cache_dir.to_path_buf(),
            integrity,
            key,
            verified: Mutex::default(),
        };
        let deleted = guard.check();
        if deleted > 0 {
            tracing::warn!(
                deleted,
                dir = %cache_dir.display(),
                "compiled-artifact cache entries failed their integrity check and were deleted; their components compile again"
            );
        }
        Ok(guard)
    }

    /// Checks every entry not checked since it last changed; deletes those
    /// whose MAC is missing or wrong. Returns how many it deleted. Run
    /// before every compile.
    pub fn check(&self) -> usize {
        self.sweep(false)
    }

    /// Records the MAC of every entry written since the last sweep (by the
    /// compile that just ran), and checks the others like [`Self::check`].
    pub fn record(&self) {
        self.sweep(true);
    }

    fn sweep(&self, record_new: bool) -> usize {
        let Ok(mut verified) = self.verified.lock() else {
            return 0;
        };
        let mut deleted = 0;
        let mut seen = Vec::new();
        for entry in self.entries() {
            let Ok(meta) = std::fs::symlink_metadata(&entry) else {
                continue;
            };
            let stamp = FileStamp::of_meta(&meta);
            seen.push(entry.clone());
            if verified.get(&entry) == Some(&stamp) {
                continue;
            }
            let Ok(bytes) = std::fs::read(&entry) else {
                continue;
            };
            let rel = entry.strip_prefix(&self.root).unwrap_or(&entry);
            let mac = self.mac(rel, &bytes);
            let mac_path = self.mac_path(rel);
            if !record_new && !mac_path.exists() && is_young(&meta) {
                // Another host sharing the cache may have just written it
                // and be about to record its MAC: give it a moment.
                wait_for(&mac_path);
            }
            let good = match std::fs::read_to_string(&mac_path) {
                Ok(recorded) => meta.is_file() && recorded.trim() == mac,
                Err(_) if record_new && meta.is_file() => {
                    if let Err(e) = write_atomic(&mac_path, mac.as_bytes()) {
                        tracing::warn!(error = %e, "cannot record a cache entry's MAC; it will be compiled again");
                    }
                    true
                }
                Err(_) => false,
            };
            if good {
                verified.insert(entry, stamp);
            } else {
                tracing::warn!(
                    entry = %rel.display(),
                    "compiled-artifact cache entry failed its integrity check; deleted before it could load"
                );
                let _ = std::fs::remove_file(&entry);
                let _ = std::fs::remove_file(entry.with_extension("stats"));
                let _ = std::fs::remove_file(&mac_path);
                verified.remove(&entry);
                deleted += 1;
            }
        }
        verified.retain(|path, _| seen.contains(path));
        deleted
    }

    /// The entries: extension-less files two levels under `CACHE/modules`
    /// (wasmtime's layout: `modules/COMPILER-VERSION/HASH`).
    fn entries(&self) -> Vec<PathBuf> {
        let modules = self.root.join("modules");
        let mut out = Vec::new();
        let Ok(compilers) = std::fs::read_dir(&modules) else {
            return out;
        };
        for compiler in compilers.flatten() {
            let Ok(files) = std::fs::read_dir(compiler.path()) else {
                continue;
            };
            for file in files.flatten() {
                let path = file.path();
                if path.extension().is_none() {
                    out.push(path);
                }
            }
        }
        out
    }

    fn mac(&self, rel: &Path, bytes: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            return String::new();
        };
        mac.update(rel.as_os_str().as_encoded_bytes());
        mac.update(&[0]);
        mac.update(bytes);
        hex::encode(mac.finalize().into_bytes())
    }

    fn mac_path(&self, rel: &Path) -> PathBuf {
        let name = hex::encode(Sha256::digest(rel.as_os_str().as_encoded_bytes()));
        self.integrity.join(&name[..32])
    }
}

/// How long after writing an entry a host sharing the cache has to record
/// its MAC before another host deletes it as unknown.
const RECORD_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the entry was written within [`RECORD_GRACE`].
fn is_young(meta: &std::fs::Metadata) -> bool {
    meta.modified()
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age < RECORD_GRACE)
}

/// Waits (at most [`RECORD_GRACE`]) for `path` to appear.
fn wait_for(path: &Path) {
    let deadline = std::time::Instant::now() + RECORD_GRACE;
    while !path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Creates `dir` (and its parents) mode 0700 when missing.
fn create_private_dir(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("failed to create cache directory {}", dir.display()))
}

/// Refuses a directory another user owns or may write: whoever writes it
/// chooses the native code the host runs.
fn check_private(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir)
        .with_context(|| format!("cannot read cache directory {}", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "cache directory {} belongs to user {}, not to this one ({me}): compiled code read from it runs as host code; use a directory of your own (--cache-dir)",
            dir.display(),
            meta.uid()
        );
    }
    if meta.permissions().mode() & 0o022 != 0 {
        bail!(
            "cache directory {} is writable by other users (mode {:o}): compiled code read from it runs as host code; `chmod go-w` it or use another --cache-dir",
            dir.display(),
            meta.permissions().mode() & 0o777
        );
    }
    Ok(())
}

/// The key in `path`, or a new random one written there (mode 0600).
fn load_or_create_key(path: &Path) -> Result<[u8; 32]> {
    if let Ok(bytes) = std::fs::read(path) {
        if let Ok(key) = <[u8; 32]>::try_from(bytes.as_slice()) {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("failed to make {} private", path.display()))?;
            return Ok(key);
        }
        tracing::warn!(path = %path.display(), "the cache key is damaged; a new one is made and every entry compiles again");
        let _ = std::fs::remove_file(path);
    }
    let mut key = [0u8; 32];
    std::io::Read::read_exact(
        &mut std::fs::File::open("/dev/urandom").context("failed to open /dev/urandom")?,
        &mut key,
    )?;
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut file) => {
            std::io::Write::write_all(&mut file, &key)
                .with_context(|| format!("failed to write {}", path.display()))?;
            Ok(key)
        }
        // Another host sharing the directory made it first: use that one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(path)?;
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| anyhow::anyhow!("the cache key {} is damaged", path.display()))
        }
        Err(e) => Err(e).with_context(|| format!("failed to write {}", path.display())),
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename (the
/// temporary name is one wasmtime's cleanup takes for a lock).
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("wip-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(root: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let dir = root.join("modules").join("wasmtime-48.0.8");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn changed_copied_and_unknown_entries_are_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        let guard = CacheGuard::open(&root).unwrap();
        let a = entry(&root, "AAAA", b"code of a");
        let b = entry(&root, "BBBB", b"code of b");
        guard.record();
        assert_eq!(guard.check(), 0);
        // Changed in place.
        std::fs::write(&a, b"code of A").unwrap();
        // Another entry's bytes under this name.
        std::fs::copy(&b, root.join("modules/wasmtime-48.0.8/CCCC")).unwrap();
        assert_eq!(guard.check(), 2);
        assert!(!a.exists() && b.exists());
        // A fresh guard (a restart) trusts what was recorded, nothing else.
        let c = entry(&root, "DDDD", b"planted");
        assert_eq!(CacheGuard::open(&root).unwrap().check(), 0);
        assert!(b.exists() && !c.exists());
    }

    #[test]
    fn a_directory_others_may_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cache");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = CacheGuard::open(&root).err().unwrap();
        assert!(err.to_string().contains("writable by other users"), "{err}");
    }
}
