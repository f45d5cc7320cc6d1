//! The admin client behind `wasmhost status | release | promote | rollback`:
//! calls the admin API and prints readable tables.

use crate::views::{ServiceView, ServicesView};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// Where the admin API is and how to authenticate.
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for `base` (e.g. `http://127.0.0.1:9090`); the token is
    /// `token`, else `WASMHOST_ADMIN_TOKEN`, else `STATE/admin-token`.
    pub fn new(base: &str, token: Option<String>, state_dir: &Path) -> Result<Self> {
        let token = match token.or_else(|| {
            std::env::var("WASMHOST_ADMIN_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())
        }) {
            Some(t) => t,
            None => {
                let path = state_dir.join("admin-token");
                std::fs::read_to_string(&path)
                    .with_context(|| format!("no admin token: pass --token, set WASMHOST_ADMIN_TOKEN, or run where {} exists", path.display()))?
                    .trim()
                    .to_string()
            }
        };
        let base = if base.starts_with("http") {
            base.to_string()
        } else {
            format!("http://{base}")
        };
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http: reqwest::Client::new(),
        })
    }

    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<T> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach the admin API at {} (is wasmhost serve running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{} ({status})",
                body["error"].as_str().unwrap_or("request failed")
            );
        }
        serde_json::from_value(body).context("the admin API answered something this client does not understand (are host and client the same version?)")
    }

    /// Prints the recent log lines of `service` (the last `tail`), then, with
    /// `follow`, each new one as it comes until Ctrl-C.
    pub async fn logs(&self, service: &str, tail: usize, follow: bool) -> Result<()> {
        let mut after = 0;
        let mut limit = tail;
        loop {
            let path = format!("/admin/logs?service={service}&after={after}&limit={limit}");
            let page: crate::views::LogsView = self.call(reqwest::Method::GET, &path, None).await?;
            if !page.kept {
                bail!("this host keeps no log lines (it was not started by `wasmhost serve` or `wasmhost dev`)");
            }
            for line in &page.lines {
                println!("{}", format_line(line));
            }
            after = page.lines.last().map_or(after, |l| l.seq);
            limit = crate::logbook::CAPACITY;
            if !follow {
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    /// Prints every service, then what is compiling and what did not load.
    pub async fn status(&self) -> Result<()> {
        let all: ServicesView = self
            .call(reqwest::Method::GET, "/admin/services", None)
            .await?;
        print!("{}", table(&all.services));
        if !all.replicas.is_empty() {
            let epochs: Vec<String> = all
                .replicas
                .iter()
                .map(|r| format!("{} (epoch {})", r.replica, r.epoch))
                .collect();
            println!("replicas: {}: {}", all.replicas.len(), epochs.join(", "));
        }
        for l in &all.loading {
            let what = match l.queued_behind {
                0 => format!("compiling for {} ms", l.elapsed_ms),
                n => format!("queued behind {n}"),
            };
            println!("loading: {} (service {}, {what})", l.file, l.service);
        }
        for w in &all.warnings {
            println!("warning: {}: {}", w.file, w.error);
        }
        for e in &all.load_errors {
            println!("not loaded: {}:", e.file);
            for line in e.error.lines() {
                println!("    {line}");
            }
        }
        Ok(())
    }

    /// Sets the weights (and optionally stickiness) of `service`.
    pub async fn release(
        &self,
        service: &str,
        weights: &str,
        sticky: Option<String>,
    ) -> Result<()> {
        let weights = parse_weights(weights)?;
        let mut body = json!({ "weights": weights });
        if let Some(s) = sticky {
            body["sticky"] = s.into();
        }
        let svc: ServiceView = self
            .call(
                reqwest::Method::PUT,
                &format!("/admin/services/{service}/release"),
                Some(body),
            )
            .await?;
        print!("{}", table(std::slice::from_ref(&svc)));
        Ok(())
    }

    /// Gives `version` all of `service`'s traffic.
    pub async fn promote(&self, service: &str, version: &str) -> Result<()> {
        let body = json!({ "version": version });
        let svc: ServiceView = self
            .call(
                reqwest::Method::POST,
                &format!("/admin/services/{service}/promote"),
                Some(body),
            )
            .await?;
        print!("{}", table(std::slice::from_ref(&svc)));
        Ok(())
    }

    /// Prints every consumer group: its topic, backlog, in flight,
    /// redeliveries and dead letters.
    pub async fn topics(&self) -> Result<()> {
        let all: Value = self
            .call(reqwest::Method::GET, "/admin/topics", None)
            .await?;
        let groups: Vec<crate::topics_api::GroupView> =
            serde_json::from_value(all["groups"].clone()).unwrap_or_default();
        let mut rows = vec![[
            "SERVICE",
            "GROUP",
            "TOPIC",
            "BACKLOG",
            "IN-FLIGHT",
            "REDELIVERING",
            "DEAD",
            "LAG",
        ]
        .map(String::from)
        .to_vec()];
        for g in groups {
            rows.push(vec![
                g.service,
                g.group,
                g.topic,
                g.stats.backlog.to_string(),
                g.stats.in_flight.to_string(),
                g.stats.redelivering.to_string(),
                g.stats.dead_letters.to_string(),
                format!("{:.1}s", g.stats.lag_ms as f64 / 1e3),
            ]);
        }
        print!("{}", aligned(rows));
        Ok(())
    }

    /// Lists, replays (`seqs`, or all) or purges a group's dead letters.
    pub async fn dlq(&self, action: DlqAction, service: &str, group: Option<&str>) -> Result<()> {
        let group = group.unwrap_or(service);
        let base = format!("/admin/groups/{service}/{group}");
        match action {
            DlqAction::List => {
                let list: Value = self
                    .call(
                        reqwest::Method::GET,
                        &format!("{base}/dead-letters?limit=1000"),
                        None,
                    )
                    .await?;
                let letters: Vec<crate::messages::DeadLetter> =
                    serde_json::from_value(list["dead_letters"].clone()).unwrap_or_default();
                let mut rows = vec![["SEQ", "ID", "TOPIC", "ATTEMPTS", "VERSION", "REASON"]
                    .map(String::from)
                    .to_vec()];
                for d in letters {
                    rows.push(vec![
                        d.seq.to_string(),
                        d.id,
                        d.topic,
                        d.attempts.to_string(),
                        d.version,
                        d.reason,
                    ]);
                }
                print!("{}", aligned(rows));
            }
            DlqAction::Replay(seqs) => {
                let body = match seqs {
                    None => serde_json::json!({ "all": true }),
                    Some(seqs) => serde_json::json!({ "seqs": seqs }),
                };
                let done: Value = self
                    .call(reqwest::Method::POST, &format!("{base}/replay"), Some(body))
                    .await?;
                println!("replayed {}", done["replayed"]);
            }
            DlqAction::Purge => {
                let done: Value = self
                    .call(
                        reqwest::Method::DELETE,
                        &format!("{base}/dead-letters"),
                        None,
                    )
                    .await?;
                println!("purged {}", done["purged"]);
            }
        }
        Ok(())
    }

    /// Gives the stable version all of `service`'s traffic.
    pub async fn rollback(&self, service: &str) -> Result<()> {
        let svc: ServiceView = self
            .call(
                reqwest::Method::POST,
                &format!("/admin/services/{service}/rollback"),
                None,
            )
            .await?;
        print!("{}", table(std::slice::from_ref(&svc)));
        Ok(())
    }
}

/// Parses `1.0.0=90,1.1.0=10`.
pub fn parse_weights(spec: &str) -> Result<BTreeMap<String, u32>> {
    spec.split(',')
        .map(|pair| {
            let (v, w) = pair
                .split_once('=')
                .with_context(|| format!("`{pair}` is not VERSION=PERCENT"))?;
            let w: u32 = w
                .trim()
                .parse()
                .with_context(|| format!("`{w}` is not a whole percentage"))?;
            Ok((v.trim().to_string(), w))
        })
        .collect()
}

/// What `wasmhost dlq` does.
#[derive(Debug, Clone)]
pub enum DlqAction {
    /// List the dead letters.
    List,
    /// Put them back for delivery: these sequence numbers, or all.
    Replay(Option<Vec<u64>>),
    /// Delete them.
    Purge,
}

/// Rows as aligned columns, two spaces apart.
fn aligned(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Renders services as an aligned table.
pub fn table(services: &[ServiceView]) -> String {
    let cluster = services.iter().any(|s| s.replicas.is_some());
    let mut rows = vec![[
        "SERVICE",
        "VERSION",
        "WEIGHT",
        "LOADED",
        "STATE",
        "REQUESTS",
        "5XX",
        "TRAPS",
        "IN-FLIGHT",
        "P50 MS",
        "P99 MS",
        "ROUTES",
    ]
    .map(String::from)
    .to_vec()];
    for s in services {
        let routes = s.routes.join(",");
        for v in &s.versions {
            let m = &v.metrics;
            rows.push(vec![
                s.name.clone(),
                v.version.clone(),
                format!("{}%", v.weight),
                match (v.loaded_on, s.replicas) {
                    (Some(on), Some(of)) => format!("{on}/{of}"),
                    _ => String::new(),
                },
                match (v.state.as_str(), v.ejected_for_secs) {
                    ("", _) => "serving".to_string(),
                    ("ejected", Some(secs)) => format!("ejected ({secs}s)"),
                    (state, _) => state.to_string(),
                },
                m.requests.to_string(),
                m.errors.to_string(),
                m.traps.to_string(),
                m.in_flight.to_string(),
                m.p50_ms.to_string(),
                m.p99_ms.to_string(),
                routes.clone(),
            ]);
        }
    }
    if !cluster {
        // Only a cluster's replicas load versions apart.
        for row in &mut rows {
            row.remove(3);
        }
    }
    aligned(rows)
}

/// One log line as `wasmhost logs` prints it.
fn format_line(line: &crate::logbook::Line) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(line.at_ms);
    let at = humantime::format_rfc3339_millis(at);
    let version = line
        .version
        .as_deref()
        .map(|v| format!("@{v}"))
        .unwrap_or_default();
    let origin = if line.target == "guest" {
        ""
    } else {
        " (host)"
    };
    format!(
        "{at} {:>5} {}{version}{origin}: {}",
        line.level, line.service, line.message
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_weight_specs() {
        let w = parse_weights("1.0.0=90, 1.1.0=10").unwrap();
        assert_eq!(w.get("1.0.0"), Some(&90));
        assert_eq!(w.get("1.1.0"), Some(&10));
        assert!(parse_weights("1.0.0").is_err());
        assert!(parse_weights("1.0.0=ten").is_err());
    }

    #[test]
    fn renders_an_aligned_table() {
        let svc: ServiceView = serde_json::from_value(json!({"name": "user", "routes": ["/users"], "sticky": null, "running": 0, "limits": null, "grants": null, "versions": [
            {"version": "1.1.0", "weight": 10, "digest": "", "size": 0, "world": "", "metrics": {"requests": 5, "errors": 0, "traps": 0, "in_flight": 0, "p50_ms": 0.5, "p90_ms": 1.0, "p99_ms": 1.0, "sum_seconds": 0.0, "cumulative": []}}
        ]}))
        .unwrap();
        let t = table(&[svc]);
        assert!(t.starts_with("SERVICE  VERSION  WEIGHT"), "{t}");
        assert!(t.contains("user     1.1.0    10%     serving"), "{t}");
        let mut clustered = svc_with_state("serving");
        clustered.replicas = Some(3);
        clustered.versions[0].loaded_on = Some(2);
        let t = table(&[clustered]);
        assert!(t.starts_with("SERVICE  VERSION  WEIGHT  LOADED"), "{t}");
        assert!(t.contains(" 2/3 "), "{t}");
        assert!(!table(&[svc_with_state("serving")]).contains("LOADED"));
        let mut ejected = svc_with_state("ejected");
        ejected.versions[0].ejected_for_secs = Some(27);
        assert!(table(&[ejected]).contains("ejected (27s)"));
    }

    fn svc_with_state(state: &str) -> ServiceView {
        ServiceView {
            name: "user".into(),
            versions: vec![crate::views::VersionView {
                version: "1.1.0".into(),
                state: state.into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}
