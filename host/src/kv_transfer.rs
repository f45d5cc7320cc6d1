//! `wasmhost kv export|import`: the services' key-value data as JSON lines,
//! to move it between a host's embedded store (`STATE/kv.redb`) and the
//! cluster's Redis, or to back it up.
//!
//! Invariant: an export read back by an import gives the same entries,
//! byte for byte: one line per key, `{"service","bucket","key","value"}`,
//! the value as text when it is UTF-8 and as `value_base64` otherwise. A
//! line that does not parse stops the import before anything is written,
//! naming its line number.

use crate::kv::{Entry, KvStore};
use crate::redis_kv::RedisKv;
use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use std::io::{BufRead, Write};
use std::path::Path;

/// One line of the file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    service: String,
    bucket: String,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
}

impl From<Entry> for Line {
    fn from(e: Entry) -> Self {
        let (value, value_base64) = match String::from_utf8(e.value) {
            Ok(text) => (Some(text), None),
            Err(bytes) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes())),
            ),
        };
        Line {
            service: e.service,
            bucket: e.bucket,
            key: e.key,
            value,
            value_base64,
        }
    }
}

impl TryFrom<Line> for Entry {
    type Error = anyhow::Error;

    fn try_from(l: Line) -> Result<Self> {
        let value = match (l.value, l.value_base64) {
            (Some(text), None) => text.into_bytes(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .context("value_base64 is not base64")?,
            _ => bail!("needs exactly one of `value` and `value_base64`"),
        };
        Ok(Entry {
            service: l.service,
            bucket: l.bucket,
            key: l.key,
            value,
        })
    }
}

/// Where the data is: a cluster's Redis, or a state directory's file.
pub enum Place<'a> {
    /// `redis://…`.
    Redis(&'a str),
    /// `STATE/kv.redb`.
    State(&'a Path),
}

impl Place<'_> {
    fn open_embedded(dir: &Path) -> Result<KvStore> {
        let path = dir.join("kv.redb");
        if !path.exists() {
            bail!(
                "{} does not exist: is --state the host's state directory?",
                path.display()
            );
        }
        KvStore::open(&path)
    }

    async fn open_redis(url: &str) -> Result<RedisKv> {
        let redis = RedisKv::open(url)?;
        redis
            .ping()
            .await
            .with_context(|| format!("the Redis at {} does not answer", redis.addr()))?;
        Ok(redis)
    }
}

/// Writes every entry of `from` to `out`, one JSON line each; returns how many.
pub async fn export(from: Place<'_>, out: &mut dyn Write) -> Result<u64> {
    let mut write = |e: Entry| -> Result<()> {
        serde_json::to_writer(&mut *out, &Line::from(e))?;
        out.write_all(b"\n").context("failed to write the export")
    };
    let count = match from {
        Place::Redis(url) => Place::open_redis(url).await?.export(&mut write).await?,
        Place::State(dir) => Place::open_embedded(dir)?.export(&mut write)?,
    };
    out.flush().context("failed to write the export")?;
    Ok(count)
}

/// Reads JSON lines from `input` and stores them in `to`; returns how many.
pub async fn import(to: Place<'_>, input: &mut dyn BufRead) -> Result<u64> {
    let mut entries = Vec::new();
    for (n, line) in input.lines().enumerate() {
        let line = line.context("failed to read the import")?;
        if line.trim().is_empty() {
            continue;
        }
        let entry = serde_json::from_str::<Line>(&line)
            .map_err(anyhow::Error::from)
            .and_then(Entry::try_from)
            .with_context(|| format!("line {} is not an exported entry", n + 1))?;
        entries.push(entry);
    }
    match to {
        Place::Redis(url) => Place::open_redis(url).await?.import(&entries).await?,
        Place::State(dir) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("failed to create {}", dir.display()))?;
            KvStore::open(&dir.join("kv.redb"))?.import(&entries)?
        }
    }
    Ok(entries.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_export_imports_back_byte_for_byte() {
        let from = tempfile::tempdir().unwrap();
        let kv = KvStore::open(&from.path().join("kv.redb")).unwrap();
        let entries = vec![
            Entry {
                service: "user".into(),
                bucket: "users".into(),
                key: "1".into(),
                value: br#"{"name":"ada"}"#.to_vec(),
            },
            Entry {
                service: "user".into(),
                bucket: "users".into(),
                key: "blob".into(),
                value: vec![0xff, 0, 1],
            },
        ];
        kv.import(&entries).unwrap();
        drop(kv);
        let mut out = Vec::new();
        assert_eq!(
            export(Place::State(from.path()), &mut out).await.unwrap(),
            2
        );
        let text = String::from_utf8(out.clone()).unwrap();
        assert!(text.contains(r#""value":"{\"name\":\"ada\"}""#), "{text}");
        assert!(text.contains(r#""value_base64":"/wAB""#), "{text}");
        let to = tempfile::tempdir().unwrap();
        assert_eq!(
            import(Place::State(to.path()), &mut &out[..])
                .await
                .unwrap(),
            2
        );
        let mut back = Vec::new();
        KvStore::open(&to.path().join("kv.redb"))
            .unwrap()
            .export(|e| {
                back.push(e);
                Ok(())
            })
            .unwrap();
        assert_eq!(back, entries);
    }

    #[tokio::test]
    async fn a_bad_line_writes_nothing_and_says_where() {
        let to = tempfile::tempdir().unwrap();
        let input =
            b"{\"service\":\"u\",\"bucket\":\"b\",\"key\":\"k\",\"value\":\"v\"}\nnot json\n";
        let err = import(Place::State(to.path()), &mut &input[..])
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(!to.path().join("kv.redb").exists());
        let err = export(Place::State(to.path()), &mut Vec::new())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"), "{err}");
    }
}
