//! A closed-loop HTTP/1.1 load generator: `loadgen URL CONNECTIONS SECONDS`.
//! Each connection sends GET URL, waits for the whole response, and sends
//! the next; prints one JSON line: requests, errors, rps, p50_ms, p99_ms.
//! With `LOADGEN_BODY=JSON` set it sends `POST URL` with that JSON body
//! instead (a write per request).

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        bail!("usage: loadgen URL CONNECTIONS SECONDS");
    }
    let uri: hyper::Uri = args[1].parse().context("URL")?;
    let connections: usize = args[2].parse().context("CONNECTIONS")?;
    let seconds: f64 = args[3].parse().context("SECONDS")?;
    let addr = format!(
        "{}:{}",
        uri.host().context("URL has no host")?,
        uri.port_u16().unwrap_or(80)
    );
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let body = std::env::var("LOADGEN_BODY").ok().map(bytes::Bytes::from);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (addr, path, body) = (addr.clone(), path.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            connection(&addr, &path, body, deadline).await
        }));
    }
    let started = Instant::now();
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    for task in tasks {
        let (l, e) = task.await.context("connection task")??;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    println!(
        "{}",
        serde_json::json!({
            "requests": latencies.len(),
            "errors": errors,
            "rps": latencies.len() as f64 / elapsed,
            "p50_ms": wasmhost_bench::percentile_ms(&latencies, 0.50),
            "p99_ms": wasmhost_bench::percentile_ms(&latencies, 0.99),
        })
    );
    Ok(())
}

/// One keep-alive connection sending requests until `deadline`.
async fn connection(
    addr: &str,
    path: &str,
    body: Option<bytes::Bytes>,
    deadline: Instant,
) -> Result<(Vec<u32>, u64)> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect {addr}"))?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    while Instant::now() < deadline {
        let req = match &body {
            Some(b) => hyper::Request::post(path)
                .header("host", addr)
                .header("content-type", "application/json")
                .body(Full::new(b.clone()))?,
            None => hyper::Request::get(path)
                .header("host", addr)
                .body(Full::new(bytes::Bytes::new()))?,
        };
        let t0 = Instant::now();
        match sender.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                if resp.into_body().collect().await.is_err() || !ok {
                    errors += 1;
                }
                latencies.push(u32::try_from(t0.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
            Err(_) => {
                errors += 1;
                break;
            }
        }
    }
    Ok((latencies, errors))
}
