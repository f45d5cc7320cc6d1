//! The route table: request path → service name, longest prefix wins.
//!
//! Prefixes match whole path segments: `/users` serves `/users`, `/users/7`
//! and `/users?x`, never `/usersx`. The table is immutable once built; a
//! change builds a new table and swaps it in.

use anyhow::{bail, Result};
use std::collections::BTreeMap;

/// Maps path prefixes to service names.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    /// prefix → service, e.g. `/users` → `user`.
    routes: BTreeMap<String, String>,
}

impl RouteTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Claims `prefix` for `service`; a prefix already claimed by another
    /// service is an error naming both.
    pub fn insert(&mut self, prefix: &str, service: &str) -> Result<()> {
        match self.routes.get(prefix) {
            Some(owner) if owner != service => {
                bail!("route `{prefix}` is claimed by both `{owner}` and `{service}`")
            }
            _ => {
                self.routes.insert(prefix.to_string(), service.to_string());
                Ok(())
            }
        }
    }

    /// The service that owns `path`, if any (longest matching prefix).
    pub fn lookup(&self, path: &str) -> Option<&str> {
        // Try the path itself, then each parent: `/a/b/c`, `/a/b`, `/a`, `/`.
        let mut candidate = path.trim_end_matches('/');
        loop {
            if let Some(service) = self.routes.get(candidate) {
                return Some(service);
            }
            match candidate.rfind('/') {
                Some(i) => candidate = &candidate[..i],
                None => break,
            }
        }
        self.routes.get("/").map(String::as_str)
    }

    /// The service that claimed exactly `prefix`.
    pub fn lookup_exact(&self, prefix: &str) -> Option<&str> {
        self.routes.get(prefix).map(String::as_str)
    }

    /// Every (prefix, service) pair, sorted by prefix.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes.iter().map(|(p, s)| (p.as_str(), s.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let mut t = RouteTable::new();
        t.insert("/users", "user").unwrap();
        t.insert("/user", "user").unwrap();
        t.insert("/orders", "order").unwrap();
        t.insert("/orders/archive", "archive").unwrap();
        t
    }

    #[test]
    fn longest_prefix_wins() {
        let t = table();
        assert_eq!(t.lookup("/orders/archive/3"), Some("archive"));
        assert_eq!(t.lookup("/orders/archive"), Some("archive"));
        assert_eq!(t.lookup("/orders/3"), Some("order"));
        assert_eq!(t.lookup("/orders"), Some("order"));
        assert_eq!(t.lookup("/orders/"), Some("order"));
    }

    #[test]
    fn matches_whole_segments_only() {
        let t = table();
        assert_eq!(t.lookup("/usersx"), None);
        assert_eq!(t.lookup("/user"), Some("user"));
        assert_eq!(t.lookup("/users/1"), Some("user"));
        assert_eq!(t.lookup("/"), None);
        assert_eq!(t.lookup("/nothing/here"), None);
    }

    #[test]
    fn root_route_catches_the_rest() {
        let mut t = table();
        t.insert("/", "fallback").unwrap();
        assert_eq!(t.lookup("/nothing/here"), Some("fallback"));
        assert_eq!(t.lookup("/users/2"), Some("user"));
    }

    #[test]
    fn conflict_names_both_services() {
        let mut t = table();
        let err = t.insert("/users", "probe").unwrap_err().to_string();
        assert!(
            err.contains("`user`") && err.contains("`probe`") && err.contains("/users"),
            "{err}"
        );
        // The same service claiming its own prefix twice is fine.
        t.insert("/users", "user").unwrap();
    }
}
