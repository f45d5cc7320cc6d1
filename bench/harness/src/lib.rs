//! Benchmark harness for wasmhost: `loadgen` (a closed-loop HTTP/1.1 load
//! generator on hyper) and `native-user` (the user service's GET written as
//! a native axum handler over redb, the baseline). `bench/run.sh` drives
//! them; see `bench/README.md`.

/// Latency percentiles of a sorted slice of microseconds, in milliseconds.
pub fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((sorted_us.len() as f64 * q).ceil() as usize).clamp(1, sorted_us.len());
    f64::from(sorted_us[rank - 1]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 50.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
