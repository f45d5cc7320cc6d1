//! Reading the operator's files in the plugins directory (components and
//! manifests) without trusting what they are.
//!
//! Invariant: a read through this module never blocks on a FIFO, socket or
//! device (the file is opened non-blocking and checked to be a regular file
//! on the open handle, so it cannot be swapped between check and read),
//! never returns more than its cap, and never follows a symlink out of the
//! plugins directory unless the operator allowed it.

use anyhow::{bail, Context, Result};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

/// A file modified more recently than this is still being written and is
/// read on a later scan (unless it was renamed into place).
pub const STABLE_AGE: Duration = Duration::from_millis(300);

/// What identifies one state of a file on disk: its device, inode, size and
/// modification and change times. A rewrite or a rename changes one of them
/// (and `ctime` cannot be set back by a writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of `path` (following symlinks), if it can be read.
    pub fn of(path: &Path) -> Option<Self> {
        std::fs::metadata(path).ok().map(|m| Self::of_meta(&m))
    }

    /// The stamp of a file whose metadata is at hand.
    pub fn of_meta(m: &std::fs::Metadata) -> Self {
        Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Whether `path` has not been modified for [`STABLE_AGE`] (a file that
/// does not exist is settled: there is nothing to wait for).
pub fn is_settled(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age >= STABLE_AGE)
}

/// Reads `path`, a file in `dir`: only a regular file of at most `max`
/// bytes; a symlink must lead inside `dir` unless `follow_outside`.
pub fn read_regular(dir: &Path, path: &Path, max: u64, follow_outside: bool) -> Result<Vec<u8>> {
    let link = std::fs::symlink_metadata(path).context("cannot read file metadata")?;
    if link.file_type().is_symlink() {
        let target = path.canonicalize().context("broken symlink")?;
        let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
        if !target.starts_with(&dir) && !follow_outside {
            bail!("symlink leads outside the plugins directory; copy the file in instead (or start the host with --follow-symlinks)");
        }
    }
    if !link.file_type().is_symlink() && !link.is_file() {
        bail!("not a regular file");
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .context("cannot open file")?;
    let meta = file.metadata().context("cannot read file metadata")?;
    if !meta.is_file() {
        bail!("not a regular file");
    }
    if meta.len() > max {
        bail!("file is {} bytes, over the {max}-byte limit", meta.len());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .context("cannot read file")?;
    if bytes.len() as u64 > max {
        bail!("file grew over the {max}-byte limit while it was read");
    }
    Ok(bytes)
}

/// `text` cut to at most `max` characters, marked when cut (an error that
/// quotes a file must not become a file-sized log line).
pub fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}… ({} bytes more)", &text[..at], text.len() - at),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.toml");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let err = read_regular(dir.path(), &fifo, 100, false).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
    }

    #[test]
    fn size_cap_and_outside_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; 101]).unwrap();
        let err = read_regular(dir.path(), &big, 100, false).unwrap_err();
        assert!(err.to_string().contains("over the 100-byte limit"), "{err}");
        let link = dir.path().join("passwd.toml");
        std::os::unix::fs::symlink("/etc/passwd", &link).unwrap();
        let err = read_regular(dir.path(), &link, 1 << 20, false).unwrap_err();
        assert!(err.to_string().contains("symlink leads outside"), "{err}");
        let inside = dir.path().join("inside.toml");
        std::os::unix::fs::symlink(&big, &inside).unwrap();
        assert_eq!(
            read_regular(dir.path(), &inside, 200, false).unwrap().len(),
            101
        );
    }

    #[test]
    fn clip_marks_what_it_cut() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("abcdef", 3), "abc… (3 bytes more)");
    }
}
