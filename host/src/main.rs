//! The `wasmhost` command: parses arguments, sets up logging, and runs.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer as _};
use wasmhost::config::{
    ServeArgs, DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, DEFAULT_PLUGINS_DIR, DEFAULT_STATE_DIR,
};

/// A WebAssembly component host for HTTP microservices.
///
/// Each service is a Wasm component (see wit/ for the contract) dropped into
/// the plugins directory as NAME@VERSION.wasm. Requests are routed by path
/// prefix and each one runs in a fresh, sandboxed instance.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load every component in the plugins directory and serve HTTP.
    ///
    /// A manifest NAME.toml beside a component sets its routes
    /// (routes = ["/users"]; default: /NAME), config values ([config]),
    /// limits ([limits]: memory, cpu-time, timeout, request-body,
    /// response-body, concurrency, call-depth, log-bytes, resources,
    /// requests-per-instance), grants ([grants]: services, http, env, dir,
    /// publish; see SECURITY.md), retries and fallback ([resilience]) and
    /// the topics it consumes ([[subscribe]]). Each service is served as soon as its version
    /// has compiled; until then its routes answer 503 with retry-after.
    /// Set RUST_LOG=wasmhost=debug to see every request as a span tree, or
    /// --otlp URL to send the spans to an OpenTelemetry collector. The admin
    /// listener also serves the release dashboard at /ui.
    Serve(ServeArgs),
    /// Create a service from a template: its source, build file, the WIT it
    /// needs, a manifest and a test.
    ///
    /// Writes PLUGINS/NAME/ and PLUGINS/NAME.toml (never over anything that
    /// exists). A Rust service uses the guest SDK in PLUGINS/sdk (written
    /// there when missing). Then: wasmhost dev, and edit.
    New {
        /// The service's name (lowercase letters, digits and `-`): it
        /// answers at /NAME.
        name: String,
        /// Its language.
        #[arg(long, value_enum, default_value = "rust")]
        lang: wasmhost::authoring::Lang,
        /// The plugins directory.
        #[arg(long, default_value = DEFAULT_PLUGINS_DIR)]
        plugins: PathBuf,
    },
    /// Build every service source under the plugins directory into
    /// PLUGINS/NAME@VERSION.wasm.
    ///
    /// Each folder with a Cargo.toml (cargo, wasm32-wasip2), pyproject.toml
    /// (componentize-py) or package.json (its `build` script,
    /// componentize-js) is a service; its name and version come from that
    /// file. A running host loads each build as it lands.
    Build {
        /// Build only these services (default: all).
        services: Vec<String>,
        /// The plugins directory.
        #[arg(long, default_value = DEFAULT_PLUGINS_DIR)]
        plugins: PathBuf,
    },
    /// Serve the plugins directory and rebuild a service whenever its
    /// source is saved.
    ///
    /// Builds every service source first, then serves as `wasmhost serve`
    /// does. On each save only the service that changed is rebuilt and
    /// swapped in, without a restart or a dropped request; a build error is
    /// shown (file, line, message) and the last good build keeps serving.
    /// Key-value data lives in the state directory and survives. Ctrl-C
    /// stops everything.
    Dev(ServeArgs),
    /// Show every service: versions, weights, live metrics, load errors.
    Status {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Split a service's traffic between versions (a gray release).
    ///
    /// Example: wasmhost release user --weights 1.0.0=90,1.1.0=10 --sticky header:x-user-id
    Release {
        /// The service.
        service: String,
        /// VERSION=PERCENT pairs summing to 100.
        #[arg(long)]
        weights: String,
        /// Keep each client on one version: header:NAME or cookie:NAME.
        #[arg(long)]
        sticky: Option<String>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Give one version all of a service's traffic and make it the stable one.
    Promote {
        /// The service.
        service: String,
        /// The version to promote.
        version: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show a service's recent log lines: its own (wasi:logging, stdout,
    /// stderr) and the host's about it (loads, swaps, failures).
    ///
    /// Example: wasmhost logs user --follow
    Logs {
        /// The service.
        service: String,
        /// Keep printing new lines until Ctrl-C.
        #[arg(long, short)]
        follow: bool,
        /// How many of the most recent lines to print first.
        #[arg(long, short = 'n', default_value_t = 100)]
        tail: usize,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show every consumer group: topic, backlog, in flight, redeliveries, dead letters.
    Topics {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List, replay or purge the dead letters of a service's consumer group.
    ///
    /// Examples: wasmhost dlq list notify; wasmhost dlq replay notify --all;
    /// wasmhost dlq replay notify --seq 42 --seq 43; wasmhost dlq purge notify
    Dlq {
        /// list, replay or purge.
        #[arg(value_parser = ["list", "replay", "purge"])]
        action: String,
        /// The subscribing service.
        service: String,
        /// Its consumer group (default: the service's name).
        #[arg(long)]
        group: Option<String>,
        /// Replay only these sequence numbers (as `dlq list` shows them).
        #[arg(long = "seq")]
        seqs: Vec<u64>,
        /// Replay every dead letter of the group.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Copy the services' key-value data out of a store, or into one, as
    /// JSON lines: from a host's STATE/kv.redb to the cluster's Redis and
    /// back, or for a backup.
    ///
    /// Each line is {"service","bucket","key","value"}, or "value_base64"
    /// for a value that is not UTF-8 text. With --cluster the store is that
    /// Redis; without it, STATE/kv.redb (stop the host first: one process
    /// opens the file at a time). Import writes over keys that exist.
    ///
    /// Example: wasmhost kv export --state .wasmhost > kv.jsonl;
    /// wasmhost kv import --cluster redis://10.0.0.5:6379 < kv.jsonl
    Kv {
        /// export or import.
        #[arg(value_parser = ["export", "import"])]
        action: String,
        /// The cluster's Redis (redis://HOST:PORT) instead of STATE/kv.redb.
        #[arg(long, env = "WASMHOST_CLUSTER", value_name = "URL")]
        cluster: Option<String>,
        /// The host's state directory.
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state: PathBuf,
        /// Read or write this file instead of stdin or stdout.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Compile every component of a plugins directory into the cache, so
    /// a host started on it later serves at once.
    ///
    /// For container images: run it at build time with the same wasmhost
    /// binary and the same --memory-ceiling and --max-instances the image
    /// serves with (they are part of the cache key), and ship
    /// STATE/cache (or --cache-dir) in the image. A file that does not
    /// load is listed and the command fails, so a broken image is not built.
    ///
    /// Example: wasmhost cache warm --plugins /app/plugins --state /state
    Cache {
        /// warm.
        #[arg(value_parser = ["warm"])]
        action: String,
        #[command(flatten)]
        serve: ServeArgs,
    },
    /// Push a component to an OCI registry, as a Wasm artifact
    /// (application/wasm layer), for hosts that pull it with --source.
    ///
    /// Example: wasmhost push target/wasm32-wasip2/release/user.wasm
    /// oci://ghcr.io/acme/user:1.2.0 (oci+http:// for a registry without
    /// TLS; credentials from WASMHOST_REGISTRY_AUTH=USER:PASSWORD).
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// Where: oci://REGISTRY/PATH/NAME:VERSION.
        target: wasmhost::oci_source::Source,
    },
    /// Give the stable (last promoted, else previous) version all the traffic.
    Rollback {
        /// The service.
        service: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// How the CLI reaches the admin API.
#[derive(clap::Args)]
struct AdminArgs {
    /// Address of the admin API.
    #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
    admin: String,
    /// Admin token (default: $WASMHOST_ADMIN_TOKEN, else STATE/admin-token).
    #[arg(long)]
    token: Option<String>,
    /// The host's state directory (where admin-token is).
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    state: PathBuf,
}

impl AdminArgs {
    fn client(self) -> Result<wasmhost::client::AdminClient> {
        wasmhost::client::AdminClient::new(&self.admin, self.token, &self.state)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match real_main().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One readable chain of causes, never a backtrace.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn real_main() -> Result<()> {
    let cli = Cli::parse();
    // Lines go to stderr, filtered by RUST_LOG (default info); the lines
    // that name a service are also kept for `wasmhost logs`, at info and
    // above whatever RUST_LOG says.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")));
    let kept =
        wasmhost::logbook::layer().with_filter(tracing_subscriber::filter::LevelFilter::INFO);
    // With --otlp, the host's spans are also exported (OpenTelemetry).
    let otlp = match &cli.command {
        Command::Serve(args) | Command::Dev(args) => args.otlp.clone(),
        _ => None,
    };
    let (traces, pipeline) = match &otlp {
        Some(url) => {
            let (layer, pipeline) = wasmhost::traces::layer(url)?;
            (Some(layer), Some(pipeline))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(kept)
        .with(traces)
        .init();
    if let Some(url) = &otlp {
        tracing::info!(endpoint = %wasmhost::traces::traces_url(url)?, "exporting traces over OTLP/HTTP");
    }
    let result = command(cli.command).await;
    if let Some(pipeline) = pipeline {
        pipeline.finish(std::time::Duration::from_secs(3)).await;
    }
    result
}

async fn command(command: Command) -> Result<()> {
    match command {
        Command::Serve(args) => wasmhost::run(args.into(), wasmhost::shutdown::signal()).await,
        Command::New {
            name,
            lang,
            plugins,
        } => new_service(&plugins, &name, lang),
        Command::Build { services, plugins } => {
            tokio::task::spawn_blocking(move || wasmhost::authoring::build_all(&plugins, &services))
                .await?
        }
        Command::Dev(args) => {
            // Rebuilds recompile nearly the same code: keep compiled
            // functions unless told not to.
            let incremental = args.incremental_compile != Some(wasmhost::config::Toggle::Off);
            let mut config: wasmhost::ServeConfig = args.into();
            config.incremental_compile = incremental;
            wasmhost::authoring::dev::run(config, wasmhost::run).await
        }
        Command::Status { admin } => admin.client()?.status().await,
        Command::Release {
            service,
            weights,
            sticky,
            admin,
        } => admin.client()?.release(&service, &weights, sticky).await,
        Command::Promote {
            service,
            version,
            admin,
        } => admin.client()?.promote(&service, &version).await,
        Command::Rollback { service, admin } => admin.client()?.rollback(&service).await,
        Command::Cache { serve, .. } => warm_cache(serve.into()).await,
        Command::Push { file, target } => {
            let url = wasmhost::oci_source::push(&file, &target).await?;
            println!("pushed {} as {target} ({url})", file.display());
            Ok(())
        }
        Command::Kv {
            action,
            cluster,
            state,
            file,
        } => transfer_kv(&action, cluster.as_deref(), &state, file.as_deref()).await,
        Command::Logs {
            service,
            follow,
            tail,
            admin,
        } => admin.client()?.logs(&service, tail, follow).await,
        Command::Topics { admin } => admin.client()?.topics().await,
        Command::Dlq {
            action,
            service,
            group,
            seqs,
            all,
            admin,
        } => {
            use wasmhost::client::DlqAction;
            let action = match action.as_str() {
                "list" => DlqAction::List,
                "purge" => DlqAction::Purge,
                _ if all != seqs.is_empty() => {
                    anyhow::bail!("`wasmhost dlq replay` needs either --all or one or more --seq N")
                }
                _ => DlqAction::Replay((!all).then_some(seqs)),
            };
            admin
                .client()?
                .dlq(action, &service, group.as_deref())
                .await
        }
    }
}

/// `wasmhost cache warm`: one scan, every file compiled (or found in the
/// cache), then a summary; load errors fail the command.
async fn warm_cache(mut config: wasmhost::ServeConfig) -> Result<()> {
    // Warming touches neither Redis nor the release: only the compiler.
    config.cluster = None;
    config.messaging = None;
    config.sources.clear();
    let started = std::time::Instant::now();
    let host = wasmhost::Host::builder().config(config).build()?;
    host.load().await?;
    let snapshot = host.control().snapshot();
    let versions: usize = snapshot.registry.services().map(|s| s.versions.len()).sum();
    let cache = host
        .config()
        .cache_dir
        .clone()
        .unwrap_or_else(|| host.state_dir().join("cache"));
    eprintln!(
        "compiled {versions} versions of {} services into {} in {:.1} s",
        snapshot.registry.services().count(),
        cache.display(),
        started.elapsed().as_secs_f64()
    );
    let errors: Vec<String> = snapshot
        .registry
        .errors()
        .map(|e| format!("  {}: {}", e.file, e.error))
        .collect();
    if !errors.is_empty() {
        let files = if errors.len() == 1 { "file" } else { "files" };
        anyhow::bail!(
            "{} {files} did not load:\n{}",
            errors.len(),
            errors.join("\n")
        );
    }
    Ok(())
}

/// `wasmhost kv export|import`; the count goes to stderr, so an export to
/// stdout stays clean.
async fn transfer_kv(
    action: &str,
    cluster: Option<&str>,
    state: &std::path::Path,
    file: Option<&std::path::Path>,
) -> Result<()> {
    use anyhow::Context as _;
    use wasmhost::kv_transfer::{export, import, Place};
    let place = match cluster.filter(|u| !u.is_empty()) {
        Some(url) => Place::Redis(url),
        None => Place::State(state),
    };
    let shown = match &place {
        Place::Redis(url) => wasmhost::redis_kv::redacted(url),
        Place::State(dir) => dir.join("kv.redb").display().to_string(),
    };
    if action == "export" {
        let count = match file {
            Some(path) => {
                let mut out = std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("failed to create {}", path.display()))?,
                );
                export(place, &mut out).await?
            }
            None => export(place, &mut std::io::stdout().lock()).await?,
        };
        eprintln!("exported {count} keys from {shown}");
    } else {
        let count = match file {
            Some(path) => {
                let mut input = std::io::BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("failed to open {}", path.display()))?,
                );
                import(place, &mut input).await?
            }
            None => import(place, &mut std::io::stdin().lock()).await?,
        };
        eprintln!("imported {count} keys into {shown}");
    }
    Ok(())
}

/// `wasmhost new`: writes the service and says what to do next.
fn new_service(
    plugins: &std::path::Path,
    name: &str,
    lang: wasmhost::authoring::Lang,
) -> Result<()> {
    let created = wasmhost::authoring::templates::create(plugins, name, lang)?;
    println!(
        "created the {lang} service `{name}` in {}",
        created.dir.display()
    );
    println!("  manifest: {}", created.manifest.display());
    if let Some(sdk) = &created.sdk {
        println!(
            "  guest SDK: {} (shared by the Rust services here)",
            sdk.display()
        );
    }
    let dev = if plugins == std::path::Path::new(DEFAULT_PLUGINS_DIR) {
        "wasmhost dev".to_string()
    } else {
        format!("wasmhost dev --plugins {}", plugins.display())
    };
    println!("next:");
    println!("  {dev:<40} # builds it, serves it, rebuilds it on every save");
    println!("  curl 'http://{DEFAULT_LISTEN}/{name}?name=ada'");
    println!(
        "  {:<40} # its test, against the running host",
        created.dir.join("test.sh").display()
    );
    Ok(())
}
