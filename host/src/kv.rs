//! The embedded key-value store behind `wasi:keyvalue`: one redb database
//! file under the state directory.
//!
//! Invariant: every key is stored under its service's namespace
//! (`service \0 bucket \0 key`), and the namespace is chosen by the host from
//! the version being run, never by the guest, so one service can never read
//! or write another's keys. Every write is its own transaction committed with
//! redb's default (immediate) durability: when a write returns, it survives a
//! crash.
//!
//! A store that hit an I/O error (a full disk) does not stay broken: redb
//! refuses every later transaction on that handle ("Previous I/O error"),
//! so the handle is dropped and the file reopened — at the next operation
//! once the last one using the old handle has ended — and the failure and
//! the recovery are each logged once.
//!
//! A service with `transactional-kv` holds its writes in a [`WriteSet`]
//! (its own reads see them) that [`KvStore::commit`] writes in one
//! transaction when its request answers, and that is dropped otherwise.

use anyhow::{bail, Context, Result};
use redb::{Database, ReadableTable, TableDefinition};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

const TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");

/// Largest key a guest may use, in bytes.
pub const MAX_KEY_LEN: usize = 4096;
/// Largest bucket name a guest may use, in bytes.
pub const MAX_BUCKET_LEN: usize = 256;
/// Largest value a guest may store, in bytes.
pub const MAX_VALUE_LEN: usize = 8 * 1024 * 1024;
/// Keys returned per `list-keys` page.
pub const LIST_PAGE: usize = 1000;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct KvStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    /// The open database; `None` after an I/O error until it reopens.
    db: RwLock<Option<Arc<Database>>>,
    /// Whether the store is failing writes now (logged once per episode).
    failing: AtomicBool,
}

/// Whether `e` is an I/O failure of the database file (disk full, EIO, or
/// the handle refusing work after one).
fn is_io(e: &anyhow::Error) -> bool {
    let storage = e.downcast_ref::<redb::StorageError>().or_else(|| {
        if let Some(redb::TransactionError::Storage(s)) = e.downcast_ref() {
            return Some(s);
        }
        if let Some(redb::CommitError::Storage(s)) = e.downcast_ref() {
            return Some(s);
        }
        if let Some(redb::TableError::Storage(s)) = e.downcast_ref() {
            return Some(s);
        }
        None
    });
    matches!(
        storage,
        Some(redb::StorageError::Io(_) | redb::StorageError::PreviousIo)
    )
}

/// Opens the database file, turning redb's panics on damaged files into
/// an error.
fn open_db(path: &Path) -> Result<Database> {
    // redb panics on some damaged files instead of returning an error:
    // either way the operator gets one clear sentence, never a crash. (Its
    // panic message would print a backtrace: it is kept quiet meanwhile.)
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(
        |info| tracing::debug!(%info, "the database panicked while opening"),
    ));
    let opened = std::panic::catch_unwind(|| Database::create(path));
    std::panic::set_hook(hook);
    let opened = opened.map_err(|_| {
        anyhow::anyhow!(
            "the key-value database {} is damaged (truncated or overwritten) and cannot be opened; move it aside to start with an empty store, or restore it from a backup",
            path.display()
        )
    })?;
    opened.map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => anyhow::anyhow!(
            "the key-value database {} is already open: is another wasmhost using this state directory?",
            path.display()
        ),
        other => anyhow::Error::new(other)
            .context(format!("failed to open key-value database {}", path.display())),
    })
}

/// One service's bucket: the namespace every key of it lives under.
#[derive(Debug, Clone)]
pub struct Namespace {
    prefix: String,
}

impl Namespace {
    /// The namespace of `bucket` for `service`; refuses names that could
    /// escape it.
    pub fn new(service: &str, bucket: &str) -> Result<Self> {
        if bucket.len() > MAX_BUCKET_LEN || bucket.contains('\0') {
            bail!("bucket name must be at most {MAX_BUCKET_LEN} bytes without NUL");
        }
        Ok(Self {
            prefix: format!("{service}\0{bucket}\0"),
        })
    }

    fn key(&self, key: &str) -> Result<String> {
        self.check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    /// Refuses a key no store may hold.
    pub fn check_key(&self, key: &str) -> Result<()> {
        if key.len() > MAX_KEY_LEN {
            bail!("key longer than {MAX_KEY_LEN} bytes");
        }
        Ok(())
    }

    /// The service and the bucket.
    pub fn parts(&self) -> (&str, &str) {
        let inner = &self.prefix[..self.prefix.len() - 1];
        inner.split_once('\0').unwrap_or((inner, ""))
    }

    /// The first string after every key of this namespace.
    fn end(&self) -> String {
        let mut end = self.prefix.clone();
        end.pop();
        end.push('\u{1}');
        end
    }
}

impl KvStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let db = open_db(path)?;
        let txn = db
            .begin_write()
            .context("failed to initialise key-value database")?;
        txn.open_table(TABLE)
            .context("failed to create key-value table")?;
        txn.commit()
            .context("failed to initialise key-value database")?;
        // Only this user reads the services' data.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("failed to make {} private (mode 0600)", path.display()))?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                db: RwLock::new(Some(Arc::new(db))),
                failing: AtomicBool::new(false),
            }),
        })
    }

    /// Whether the store failed its last operation for an I/O error and has
    /// not recovered yet.
    pub fn is_failing(&self) -> bool {
        self.inner.failing.load(Ordering::Acquire)
    }

    /// Runs `op` on the open database; an I/O failure drops the handle so
    /// that a later operation reopens the file.
    fn with<T>(&self, op: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let db = self.handle()?;
        let result = op(&db);
        match &result {
            Err(e) if is_io(e) => {
                if !self.inner.failing.swap(true, Ordering::AcqRel) {
                    tracing::error!(
                        path = %self.inner.path.display(),
                        error = format_args!("{e:#}"),
                        "the key-value store cannot write; writes fail until it recovers (is the disk full?)"
                    );
                }
                if let Ok(mut slot) = self.inner.db.write() {
                    if slot.as_ref().is_some_and(|d| Arc::ptr_eq(d, &db)) {
                        *slot = None;
                    }
                }
            }
            Ok(_) if self.inner.failing.swap(false, Ordering::AcqRel) => {
                tracing::info!(path = %self.inner.path.display(), "the key-value store writes again");
            }
            _ => {}
        }
        result
    }

    /// The open database, reopening it after an I/O failure once no
    /// operation holds the old handle any more.
    fn handle(&self) -> Result<Arc<Database>> {
        if let Some(db) = self.inner.db.read().ok().and_then(|d| d.clone()) {
            return Ok(db);
        }
        let mut slot = self
            .inner
            .db
            .write()
            .map_err(|_| anyhow::anyhow!("the key-value store lock is poisoned"))?;
        if let Some(db) = slot.as_ref() {
            return Ok(db.clone());
        }
        let db = Arc::new(
            open_db(&self.inner.path)
                .context("the key-value store is unavailable after an I/O error")?,
        );
        *slot = Some(db.clone());
        Ok(db)
    }

    /// The value of `key`, if any.
    pub fn get(&self, ns: &Namespace, key: &str) -> Result<Option<Vec<u8>>> {
        let full = ns.key(key)?;
        self.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(TABLE)?;
            Ok(table.get(full.as_str())?.map(|v| v.value().to_vec()))
        })
    }

    /// Whether `key` has a value.
    pub fn exists(&self, ns: &Namespace, key: &str) -> Result<bool> {
        Ok(self.get(ns, key)?.is_some())
    }

    /// Stores `value` under `key`, durably.
    pub fn set(&self, ns: &Namespace, key: &str, value: &[u8]) -> Result<()> {
        if value.len() > MAX_VALUE_LEN {
            bail!("value larger than {MAX_VALUE_LEN} bytes");
        }
        let full = ns.key(key)?;
        self.with(|db| {
            let txn = db.begin_write()?;
            txn.open_table(TABLE)?.insert(full.as_str(), value)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Removes `key`; removing a missing key is not an error.
    pub fn delete(&self, ns: &Namespace, key: &str) -> Result<()> {
        let full = ns.key(key)?;
        self.with(|db| {
            let txn = db.begin_write()?;
            txn.open_table(TABLE)?.remove(full.as_str())?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Adds `delta` to the decimal number stored under `key` (0 when absent)
    /// in one transaction, and returns the new value.
    pub fn increment(&self, ns: &Namespace, key: &str, delta: u64) -> Result<u64> {
        let full = ns.key(key)?;
        self.with(|db| {
            let txn = db.begin_write()?;
            let next = {
                let mut table = txn.open_table(TABLE)?;
                let current = match table.get(full.as_str())? {
                    Some(v) => std::str::from_utf8(v.value())
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .with_context(|| format!("value of `{key}` is not a decimal u64"))?,
                    None => 0,
                };
                let next = current
                    .checked_add(delta)
                    .context("increment overflows u64")?;
                table.insert(full.as_str(), next.to_string().as_bytes())?;
                next
            };
            txn.commit()?;
            Ok(next)
        })
    }

    /// One page of keys in key order, starting after `cursor` keys; the
    /// returned cursor is `None` on the last page.
    pub fn list_keys(
        &self,
        ns: &Namespace,
        cursor: Option<u64>,
    ) -> Result<(Vec<String>, Option<u64>)> {
        let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
        self.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(TABLE)?;
            let end = ns.end();
            let mut keys = Vec::new();
            let mut more = false;
            for entry in table.range(ns.prefix.as_str()..end.as_str())?.skip(skip) {
                if keys.len() == LIST_PAGE {
                    more = true;
                    break;
                }
                let (k, _) = entry?;
                keys.push(k.value()[ns.prefix.len()..].to_string());
            }
            let next = more.then(|| (skip + keys.len()) as u64);
            Ok((keys, next))
        })
    }
}

/// Writes held back until a request answers: `Some(value)` to set, `None`
/// to delete, by full key.
#[derive(Debug, Default)]
pub struct WriteSet {
    writes: BTreeMap<String, Option<Vec<u8>>>,
}

impl WriteSet {
    /// Holds `key = value`, checked like a direct write.
    pub fn set(&mut self, ns: &Namespace, key: &str, value: Vec<u8>) -> Result<()> {
        if value.len() > MAX_VALUE_LEN {
            bail!("value larger than {MAX_VALUE_LEN} bytes");
        }
        self.writes.insert(ns.key(key)?, Some(value));
        Ok(())
    }

    /// Holds the removal of `key`.
    pub fn delete(&mut self, ns: &Namespace, key: &str) -> Result<()> {
        self.writes.insert(ns.key(key)?, None);
        Ok(())
    }

    /// What this set says of `key`: `Some(Some(v))` set, `Some(None)`
    /// deleted, `None` untouched.
    pub fn lookup(&self, ns: &Namespace, key: &str) -> Option<Option<&[u8]>> {
        let full = ns.key(key).ok()?;
        self.writes.get(&full).map(|v| v.as_deref())
    }

    /// Every held write as (service, bucket, key, `Some(value)` to set or
    /// `None` to delete).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str, &str, Option<&[u8]>)> {
        self.writes.iter().filter_map(|(full, value)| {
            let mut parts = full.splitn(3, '\0');
            let (service, bucket, key) = (parts.next()?, parts.next()?, parts.next()?);
            Some((service, bucket, key, value.as_deref()))
        })
    }

    /// The keys of `ns` as this set would leave `stored` (the keys in the
    /// store), in key order.
    pub fn merged(&self, ns: &Namespace, stored: Vec<String>) -> Vec<String> {
        let mut all: std::collections::BTreeSet<String> = stored.into_iter().collect();
        for (full, value) in self.writes.range(ns.prefix.clone()..ns.end()) {
            let key = full[ns.prefix.len()..].to_string();
            match value {
                Some(_) => all.insert(key),
                None => all.remove(&key),
            };
        }
        all.into_iter().collect()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Whether something is held in `ns`.
    fn touches(&self, ns: &Namespace) -> bool {
        self.writes
            .range(ns.prefix.clone()..ns.end())
            .next()
            .is_some()
    }
}

/// Writes every entry of `set` in `txn`.
pub(crate) fn apply_writes(txn: &redb::WriteTransaction, set: &WriteSet) -> Result<()> {
    let mut table = txn.open_table(TABLE)?;
    for (key, value) in &set.writes {
        match value {
            Some(v) => {
                table.insert(key.as_str(), v.as_slice())?;
            }
            None => {
                table.remove(key.as_str())?;
            }
        }
    }
    Ok(())
}

impl KvStore {
    /// Writes every entry of `set` in one transaction.
    pub fn commit(&self, set: &WriteSet) -> Result<()> {
        if set.is_empty() {
            return Ok(());
        }
        self.with(|db| {
            let txn = db.begin_write()?;
            apply_writes(&txn, set)?;
            txn.commit()?;
            Ok(())
        })
    }

    /// Runs `op` on the open database, with the store's recovery from I/O
    /// errors (for the message log, which shares the file).
    pub(crate) fn with_db<T>(&self, op: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        self.with(op)
    }

    /// [`Self::list_keys`] as `pending` would leave the bucket. Without
    /// pending writes in `ns` it is the same; with some it reads every key
    /// of the bucket to page the merged list.
    pub fn list_keys_with(
        &self,
        ns: &Namespace,
        cursor: Option<u64>,
        pending: &WriteSet,
    ) -> Result<(Vec<String>, Option<u64>)> {
        if !pending.touches(ns) {
            return self.list_keys(ns, cursor);
        }
        let mut stored = Vec::new();
        let mut page = None;
        loop {
            let (keys, next) = self.list_keys(ns, page)?;
            stored.extend(keys);
            match next {
                Some(n) => page = Some(n),
                None => break,
            }
        }
        Ok(page_of(pending.merged(ns, stored), cursor))
    }
}

/// The page of `keys` (all of a bucket, in order) that starts `cursor`
/// keys in; the returned cursor is `None` on the last page.
pub fn page_of(keys: Vec<String>, cursor: Option<u64>) -> (Vec<String>, Option<u64>) {
    let skip = usize::try_from(cursor.unwrap_or(0)).unwrap_or(usize::MAX);
    let mut page: Vec<String> = keys.into_iter().skip(skip).take(LIST_PAGE + 1).collect();
    let more = page.len() > LIST_PAGE;
    page.truncate(LIST_PAGE);
    let next = more.then(|| (skip + page.len()) as u64);
    (page, next)
}

/// One key and its value, as `wasmhost kv export` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The service whose namespace holds it.
    pub service: String,
    /// Its bucket.
    pub bucket: String,
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
}

impl KvStore {
    /// Every key-value entry of every service, in key order, handed to
    /// `each` (the message log, in its own tables, is not part of it).
    pub fn export(&self, mut each: impl FnMut(Entry) -> Result<()>) -> Result<u64> {
        self.with(|db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(TABLE)?;
            let mut count = 0;
            for entry in table.iter()? {
                let (k, v) = entry?;
                let mut parts = k.value().splitn(3, '\0');
                let (Some(service), Some(bucket), Some(key)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                each(Entry {
                    service: service.to_string(),
                    bucket: bucket.to_string(),
                    key: key.to_string(),
                    value: v.value().to_vec(),
                })?;
                count += 1;
            }
            Ok(count)
        })
    }

    /// Stores `entries` in one transaction (each checked as a guest's write).
    pub fn import(&self, entries: &[Entry]) -> Result<()> {
        let mut set = WriteSet::default();
        for e in entries {
            set.set(
                &Namespace::new(&e.service, &e.bucket)?,
                &e.key,
                e.value.clone(),
            )?;
        }
        self.commit(&set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_never_overlap() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        let user = Namespace::new("user", "data").unwrap();
        let order = Namespace::new("order", "data").unwrap();
        let user_other = Namespace::new("user", "dat").unwrap();
        kv.set(&user, "k", b"secret").unwrap();
        assert_eq!(kv.get(&order, "k").unwrap(), None);
        assert!(kv.list_keys(&order, None).unwrap().0.is_empty());
        assert!(kv.list_keys(&user_other, None).unwrap().0.is_empty());
        assert_eq!(kv.list_keys(&user, None).unwrap().0, vec!["k".to_string()]);
        assert!(Namespace::new("user", "a\0b").is_err());
    }

    #[test]
    fn increment_counts_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let ns = Namespace::new("user", "users").unwrap();
        {
            let kv = KvStore::open(&path).unwrap();
            assert_eq!(kv.increment(&ns, "next", 1).unwrap(), 1);
            assert_eq!(kv.increment(&ns, "next", 2).unwrap(), 3);
        }
        let kv = KvStore::open(&path).unwrap();
        assert_eq!(kv.get(&ns, "next").unwrap().as_deref(), Some(&b"3"[..]));
        kv.set(&ns, "word", b"abc").unwrap();
        assert!(kv.increment(&ns, "word", 1).is_err());
    }

    #[test]
    fn lists_in_pages() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        let ns = Namespace::new("s", "b").unwrap();
        for i in 0..(LIST_PAGE + 5) {
            kv.set(&ns, &format!("k{i:05}"), b"").unwrap();
        }
        let (first, cursor) = kv.list_keys(&ns, None).unwrap();
        assert_eq!(first.len(), LIST_PAGE);
        let (rest, end) = kv.list_keys(&ns, cursor).unwrap();
        assert_eq!(rest.len(), 5);
        assert_eq!(end, None);
        kv.delete(&ns, "k00000").unwrap();
        assert!(!kv.exists(&ns, "k00000").unwrap());
    }

    #[test]
    fn second_open_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kv.redb");
        let _kv = KvStore::open(&path).unwrap();
        let err = KvStore::open(&path).err().unwrap().to_string();
        assert!(err.contains("already open"), "{err}");
    }

    #[test]
    fn a_write_set_commits_at_once_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        let ns = Namespace::new("s", "b").unwrap();
        kv.set(&ns, "old", b"1").unwrap();
        kv.set(&ns, "gone", b"1").unwrap();
        let mut set = WriteSet::default();
        set.set(&ns, "new", b"2".to_vec()).unwrap();
        set.delete(&ns, "gone").unwrap();
        assert_eq!(set.lookup(&ns, "new"), Some(Some(&b"2"[..])));
        assert_eq!(set.lookup(&ns, "gone"), Some(None));
        assert_eq!(set.lookup(&ns, "old"), None);
        // Listing sees the pending writes; the store does not.
        let (keys, _) = kv.list_keys_with(&ns, None, &set).unwrap();
        assert_eq!(keys, vec!["new".to_string(), "old".to_string()]);
        assert_eq!(kv.get(&ns, "new").unwrap(), None);
        drop(WriteSet::default());
        kv.commit(&set).unwrap();
        assert_eq!(kv.get(&ns, "new").unwrap().as_deref(), Some(&b"2"[..]));
        assert!(!kv.exists(&ns, "gone").unwrap());
        // Another service's namespace is not touched by the set.
        let other = Namespace::new("t", "b").unwrap();
        assert!(!set.touches(&other));
        assert_eq!(
            set.entries().collect::<Vec<_>>(),
            vec![("s", "b", "gone", None), ("s", "b", "new", Some(&b"2"[..]))]
        );
        assert_eq!(ns.parts(), ("s", "b"));
    }

    #[test]
    fn exports_what_it_imports() {
        let dir = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&dir.path().join("kv.redb")).unwrap();
        let entries = vec![
            Entry {
                service: "order".into(),
                bucket: "orders".into(),
                key: "next-id".into(),
                value: b"7".to_vec(),
            },
            Entry {
                service: "user".into(),
                bucket: "a:b".into(),
                key: "k\0x".into(),
                value: vec![0, 255],
            },
        ];
        kv.import(&entries).unwrap();
        let mut out = Vec::new();
        let count = kv.export(|e| {
            out.push(e);
            Ok(())
        });
        assert_eq!(count.unwrap(), 2);
        assert_eq!(out, entries);
    }
}
