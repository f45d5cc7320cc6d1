//! The function cache: Cranelift's incremental compilation cache, kept in
//! memory for the life of the process (`wasmhost dev`, or `serve
//! --incremental-compile`).
//!
//! A rebuilt Python or JavaScript service is a new 12–18 MB component whose
//! functions are nearly all the interpreter's, unchanged: with this cache a
//! recompile translates every function but compiles only those whose code
//! changed, the rest come from here.
//!
//! Invariant: the cache holds at most [`MAX_BYTES`] of compiled code; once
//! full it stops taking entries (it never evicts one a compile might be
//! reading) and a compile simply compiles what it cannot find. A poisoned
//! lock is a miss, never a failure.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Mutex;

/// Compiled code kept, keys and values together.
pub const MAX_BYTES: usize = 512 * 1024 * 1024;

/// See the module docs.
#[derive(Debug, Default)]
pub struct FunctionCache {
    entries: Mutex<Entries>,
}

#[derive(Debug, Default)]
struct Entries {
    map: HashMap<Vec<u8>, Vec<u8>>,
    bytes: usize,
}

impl FunctionCache {
    /// How many compiled functions it holds.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.map.len())
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl wasmtime::CacheStore for FunctionCache {
    fn get(&self, key: &[u8]) -> Option<Cow<'_, [u8]>> {
        let entries = self.entries.lock().ok()?;
        entries.map.get(key).map(|v| Cow::Owned(v.clone()))
    }

    fn insert(&self, key: &[u8], value: Vec<u8>) -> bool {
        let Ok(mut entries) = self.entries.lock() else {
            return false;
        };
        let size = key.len() + value.len();
        if entries.bytes + size > MAX_BYTES {
            return false;
        }
        entries.bytes += size;
        if let Some(old) = entries.map.insert(key.to_vec(), value) {
            entries.bytes -= key.len() + old.len();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::CacheStore;

    #[test]
    fn keeps_entries_up_to_its_size() {
        let cache = FunctionCache::default();
        assert!(cache.get(b"f").is_none());
        assert!(cache.insert(b"f", vec![1, 2, 3]));
        assert_eq!(cache.get(b"f").as_deref(), Some(&[1u8, 2, 3][..]));
        assert!(cache.insert(b"f", vec![4]), "a key written again");
        assert_eq!(cache.entries.lock().unwrap().bytes, 2);
        assert!(!cache.insert(b"big", vec![0; MAX_BYTES]), "full: refused");
        assert!(cache.get(b"big").is_none());
    }

    /// A module compiled again with one of its 100 functions changed
    /// takes nearly all of them from the cache (a few trampolines and the
    /// changed function are compiled again).
    #[test]
    fn a_recompile_compiles_only_what_changed() {
        let cache = std::sync::Arc::new(FunctionCache::default());
        let mut config = wasmtime::Config::new();
        config
            .enable_incremental_compilation(cache.clone())
            .unwrap();
        let engine = wasmtime::Engine::new(&config).unwrap();
        let module = |answer: i32| {
            let funcs: String = (0..99)
                .map(|i| {
                    format!(
                        "(func (export \"f{i}\") (result i32) i32.const {i} i32.const 3 i32.mul)"
                    )
                })
                .collect();
            format!("(module {funcs} (func (export \"answer\") (result i32) i32.const {answer}))")
        };
        wasmtime::Module::new(&engine, module(1)).unwrap();
        let first = cache.len();
        assert!(first >= 100, "every function was kept: {first}");
        wasmtime::Module::new(&engine, module(2)).unwrap();
        let added = cache.len() - first;
        assert!(
            (1..=first / 5).contains(&added),
            "the recompile took nearly everything from the cache: {first} kept, then {added} more"
        );
    }
}
