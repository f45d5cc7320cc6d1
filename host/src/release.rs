//! Release policy: which live version of a service answers a request.
//!
//! Precedence: a pin (header `x-wasmhost-version` or cookie
//! `wasmhost-version` naming a loaded version), then stickiness (a hash of a
//! header or cookie value), then a weighted random pick. Weights are integer
//! percentages summing to 100; without weights the highest version takes
//! everything (blue-green: the previous version stays loaded for an instant
//! switch back).
//!
//! Invariant: the 100 buckets are laid out newest version first, so when a
//! newer version's weight rises, sticky keys only move from older versions to
//! it, never back.

use crate::spec::{header, validate_weights, Sticky};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Header that pins a request to a version.
pub const PIN_HEADER: &str = "x-wasmhost-version";
/// Cookie that pins a request to a version.
pub const PIN_COOKIE: &str = "wasmhost-version";

/// Which pins a request may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pins {
    /// Pins are ignored: the request is routed by stickiness and weights
    /// (an outside request without the pin token, when one is set).
    Ignored,
    /// An outside client's pin: any loaded version except one rolled back.
    Outside,
    /// A pin from a trusted caller (the pin token, or a service's own
    /// call): any loaded version.
    Trusted,
}

/// The resolved policy of one service: (version, weight) newest first.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Versions with their weight in percent, newest first, summing to 100.
    pub weights: Vec<(Arc<str>, u32)>,
    /// Optional stickiness.
    pub sticky: Option<Sticky>,
    /// Versions rolled back and not given traffic since: outside pins do
    /// not reach them.
    pub rolled_back: Vec<Arc<str>>,
    /// The stable version on record, when it is loaded: where failed
    /// requests fall back to.
    pub stable: Option<Arc<str>>,
}

impl Policy {
    /// Resolves configured weights against the loaded versions (oldest
    /// first). Without weights the newest version gets 100.
    pub fn resolve(
        loaded: &[Arc<str>],
        weights: Option<&BTreeMap<String, u32>>,
        sticky: Option<Sticky>,
    ) -> Result<Self> {
        let mut out = Vec::new();
        match weights {
            None => {
                if let Some(newest) = loaded.last() {
                    out.push((newest.clone(), 100));
                }
            }
            Some(weights) => {
                validate_weights(weights)?;
                for (version, _) in weights.iter().filter(|(_, w)| **w > 0) {
                    if !loaded.iter().any(|v| **v == **version) {
                        bail!("weights name version `{version}`, which is not loaded");
                    }
                }
                for v in loaded.iter().rev() {
                    out.push((v.clone(), weights.get(&**v).copied().unwrap_or(0)));
                }
            }
        }
        Ok(Self {
            weights: out,
            sticky,
            rolled_back: Vec::new(),
            stable: None,
        })
    }

    /// Picks the version for a request with `headers`; `roll` is a random
    /// number used when neither a pin nor a sticky key decides. Says
    /// whether a pin chose it.
    pub fn pick<'a>(
        &'a self,
        loaded: &'a [Arc<str>],
        headers: &[(String, String)],
        roll: u64,
        pins: Pins,
    ) -> Option<(&'a Arc<str>, bool)> {
        let pinned = match pins {
            Pins::Ignored => None,
            Pins::Outside | Pins::Trusted => {
                header(headers, PIN_HEADER).or_else(|| cookie(headers, PIN_COOKIE))
            }
        };
        if let Some(pin) = pinned {
            let reachable =
                |v: &&Arc<str>| pins == Pins::Trusted || !self.rolled_back.iter().any(|r| r == *v);
            if let Some(v) = loaded.iter().find(|v| ***v == *pin).filter(reachable) {
                return Some((v, true));
            }
        }
        let bucket = match self.sticky.as_ref().and_then(|s| sticky_key(s, headers)) {
            Some(key) => fnv1a(key.as_bytes()) % 100,
            None => roll % 100,
        };
        self.by_bucket(bucket).map(|v| (v, false))
    }

    /// Picks the version for a sticky value given outright (a message's
    /// key under its subscription's `sticky`): the version a request whose
    /// sticky header or cookie has the same value gets.
    pub fn pick_by_value(&self, value: &str) -> Option<&Arc<str>> {
        self.by_bucket(fnv1a(value.as_bytes()) % 100)
    }

    /// The version whose share of 0..100 holds `bucket`.
    fn by_bucket(&self, bucket: u64) -> Option<&Arc<str>> {
        let mut upper = 0u64;
        for (version, weight) in &self.weights {
            upper += u64::from(*weight);
            if bucket < upper {
                return Some(version);
            }
        }
        self.weights.first().map(|(v, _)| v)
    }
}

/// The value a request's sticky key is taken from, if it has one.
fn sticky_key<'a>(sticky: &Sticky, headers: &'a [(String, String)]) -> Option<&'a str> {
    match sticky {
        Sticky::Header(name) => header(headers, name),
        Sticky::Cookie(name) => cookie(headers, name),
    }
}

/// FNV-1a, 64-bit: a stable hash, the same in every run and release.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn cookie<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("cookie"))
        .flat_map(|(_, v)| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    fn weights(w: &[(&str, u32)]) -> BTreeMap<String, u32> {
        w.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn newest_takes_all_without_weights() {
        let loaded = versions(&["1.0.0", "1.1.0"]);
        let p = Policy::resolve(&loaded, None, None).unwrap();
        for roll in 0..100 {
            assert_eq!(
                p.pick(&loaded, &[], roll, Pins::Outside).map(|(v, _)| &**v),
                Some("1.1.0")
            );
        }
    }

    #[test]
    fn weights_split_the_buckets() {
        let loaded = versions(&["1.0.0", "1.1.0"]);
        let p = Policy::resolve(
            &loaded,
            Some(&weights(&[("1.0.0", 90), ("1.1.0", 10)])),
            None,
        )
        .unwrap();
        let new = (0..100)
            .filter(|r| p.pick(&loaded, &[], *r, Pins::Outside).map(|(v, _)| &**v) == Some("1.1.0"))
            .count();
        assert_eq!(new, 10);
    }

    #[test]
    fn pins_win_and_unknown_pins_fall_through() {
        let loaded = versions(&["1.0.0", "1.1.0"]);
        let p = Policy::resolve(&loaded, None, None).unwrap();
        let h = vec![("x-wasmhost-version".to_string(), "1.0.0".to_string())];
        assert_eq!(
            p.pick(&loaded, &h, 0, Pins::Outside).map(|(v, _)| &**v),
            Some("1.0.0")
        );
        let c = vec![(
            "cookie".to_string(),
            "a=b; wasmhost-version=1.0.0".to_string(),
        )];
        assert_eq!(
            p.pick(&loaded, &c, 0, Pins::Outside).map(|(v, _)| &**v),
            Some("1.0.0")
        );
        let bad = vec![("x-wasmhost-version".to_string(), "9.9.9".to_string())];
        assert_eq!(
            p.pick(&loaded, &bad, 0, Pins::Outside).map(|(v, _)| &**v),
            Some("1.1.0")
        );
        // A pin says so; a weighted pick does not.
        assert_eq!(
            p.pick(&loaded, &h, 0, Pins::Outside).map(|(_, pin)| pin),
            Some(true)
        );
        assert_eq!(
            p.pick(&loaded, &[], 0, Pins::Outside).map(|(_, pin)| pin),
            Some(false)
        );
        // Without the pin token a pin is ignored.
        assert_eq!(
            p.pick(&loaded, &h, 0, Pins::Ignored).map(|(v, _)| &**v),
            Some("1.1.0")
        );
    }

    #[test]
    fn a_rolled_back_version_is_reached_only_by_a_trusted_pin() {
        let loaded = versions(&["1.0.0", "1.1.0"]);
        let mut p = Policy::resolve(&loaded, Some(&weights(&[("1.0.0", 100)])), None).unwrap();
        p.rolled_back = vec![Arc::from("1.1.0")];
        let h = vec![("x-wasmhost-version".to_string(), "1.1.0".to_string())];
        assert_eq!(
            p.pick(&loaded, &h, 0, Pins::Outside).map(|(v, _)| &**v),
            Some("1.0.0")
        );
        assert_eq!(
            p.pick(&loaded, &h, 0, Pins::Trusted).map(|(v, _)| &**v),
            Some("1.1.0")
        );
    }

    #[test]
    fn sticky_keys_only_move_towards_the_newer_version() {
        let loaded = versions(&["1.0.0", "1.1.0"]);
        let sticky = Some(Sticky::parse("header:x-user-id").unwrap());
        let at = |w: u32| {
            Policy::resolve(
                &loaded,
                Some(&weights(&[("1.0.0", 100 - w), ("1.1.0", w)])),
                sticky.clone(),
            )
            .unwrap()
        };
        let (p10, p50) = (at(10), at(50));
        for user in 0..1000 {
            let h = vec![("x-user-id".to_string(), format!("user-{user}"))];
            let before = p10
                .pick(&loaded, &h, user, Pins::Outside)
                .map(|(v, _)| v.to_string());
            // The same key always lands on the same version, whatever the roll.
            assert_eq!(
                before,
                p10.pick(&loaded, &h, user + 17, Pins::Outside)
                    .map(|(v, _)| v.to_string())
            );
            let after = p50
                .pick(&loaded, &h, user, Pins::Outside)
                .map(|(v, _)| v.to_string());
            if before.as_deref() == Some("1.1.0") {
                assert_eq!(after.as_deref(), Some("1.1.0"), "user-{user} moved back");
            }
            // A message keyed by the same value lands where the request does.
            assert_eq!(
                p10.pick_by_value(&format!("user-{user}"))
                    .map(|v| v.to_string()),
                before
            );
        }
    }

    #[test]
    fn bad_weights_and_sticky_specs_are_refused() {
        let loaded = versions(&["1.0.0"]);
        assert!(Policy::resolve(&loaded, Some(&weights(&[("1.0.0", 90)])), None).is_err());
        let err = Policy::resolve(
            &loaded,
            Some(&weights(&[("1.0.0", 50), ("2.0.0", 50)])),
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("`2.0.0`"), "{err}");
        assert!(Sticky::parse("query:x").is_err());
        // Values that would wrap a u32 sum to 100 are refused, not wrapped.
        let err = validate_weights(&weights(&[("1.0.0", u32::MAX), ("1.1.0", 101)])).unwrap_err();
        assert!(err.to_string().contains("over 100"), "{err}");
        assert_eq!(
            Sticky::parse("cookie:uid").unwrap(),
            Sticky::Cookie("uid".into())
        );
    }
}
