//! The `wasmhost` command: parses arguments, sets up logging, and runs.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;
use wasmhost::config::{
    DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, DEFAULT_PLUGINS_DIR, DEFAULT_STATE_DIR,
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
    /// response-body, concurrency, call-depth, log-bytes, resources) and
    /// grants ([grants]: services, http, env, dir); see SECURITY.md.
    /// Set RUST_LOG (e.g. RUST_LOG=debug) for more detail.
    Serve {
        /// Directory of NAME@VERSION.wasm components and NAME.toml manifests.
        #[arg(long, default_value = DEFAULT_PLUGINS_DIR)]
        plugins: PathBuf,
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = DEFAULT_LISTEN)]
        listen: SocketAddr,
        /// Address of the admin API (status, weights, promote, rollback, /metrics).
        /// Every call needs `Authorization: Bearer TOKEN`: the token comes from
        /// WASMHOST_ADMIN_TOKEN, else it is generated into STATE/admin-token.
        #[arg(long, default_value = DEFAULT_ADMIN_LISTEN)]
        admin_listen: SocketAddr,
        /// Directory for the key-value database and compiled-artifact cache.
        #[arg(long, default_value = DEFAULT_STATE_DIR)]
        state: PathBuf,
        /// Instances alive at once across all services (sizes the instance
        /// pool; a request finding it full gets 503).
        #[arg(long, default_value_t = wasmhost::config::DEFAULT_MAX_INSTANCES)]
        max_instances: u32,
        /// The most linear memory any service may be given in its manifest.
        #[arg(long, default_value = "1GiB")]
        memory_ceiling: bytesize::ByteSize,
        /// Client connections open at once.
        #[arg(long, default_value_t = 1024)]
        max_connections: usize,
        /// Time a client has to send a request's headers; also how long an
        /// idle keep-alive connection stays open.
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        header_timeout: std::time::Duration,
        /// Time a client has to send a request body (over → 408).
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        body_timeout: std::time::Duration,
        /// Where compiled artifacts are cached (default: STATE/cache). Several
        /// hosts may share one.
        #[arg(long)]
        cache_dir: Option<PathBuf>,
        /// Load components that are symlinks to files outside the plugins
        /// directory (refused by default).
        #[arg(long)]
        follow_symlinks: bool,
    },
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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve {
            plugins,
            listen,
            admin_listen,
            state,
            max_instances,
            memory_ceiling,
            max_connections,
            header_timeout,
            body_timeout,
            follow_symlinks,
            cache_dir,
        } => {
            let mut config = wasmhost::ServeConfig {
                plugins_dir: plugins,
                listen,
                admin_listen,
                state_dir: state,
                ..Default::default()
            };
            config.limits.max_instances = max_instances;
            config.limits.memory_ceiling =
                usize::try_from(memory_ceiling.as_u64()).unwrap_or(usize::MAX);
            config.http.max_connections = max_connections;
            config.http.header_timeout = header_timeout;
            config.http.body_timeout = body_timeout;
            config.follow_symlinks = follow_symlinks;
            config.cache_dir = cache_dir;
            wasmhost::run(config, wasmhost::shutdown::signal()).await
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
    }
}
