//! Components from an OCI registry (`--source oci://REGISTRY/REPO`): every
//! tag of the repository that parses as a version lands in the plugins
//! directory as `NAME@TAG.wasm` (NAME: the repository's last segment), so
//! the watcher loads it like a file dropped in; and `wasmhost push`, the
//! other way.
//!
//! Invariant: a file is written only whole and only after the layer's
//! SHA-256 matched the digest its manifest names (copy to a hidden
//! temporary file, then rename); a version already in the directory is
//! never overwritten (a moved tag is reported, not followed), so what a
//! replica serves under a name is what it first pulled under it.

use anyhow::{bail, Context as _, Result};
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::Digest as _;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::oci_ref::{Source, DEFAULT_INTERVAL};

/// The media type of a Wasm component layer (the CNCF Wasm OCI artifact).
pub const WASM_LAYER: &str = "application/wasm";
/// The media type of its config.
pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// The largest layer pulled.
pub const MAX_LAYER_BYTES: u64 = 256 * 1024 * 1024;

fn reference(source: &Source, tag: &str) -> Reference {
    Reference::with_tag(
        source.registry.clone(),
        source.repository.clone(),
        tag.to_string(),
    )
}

fn client(source: &Source) -> Client {
    Client::new(ClientConfig {
        protocol: if source.insecure {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..Default::default()
    })
}

/// Credentials from `WASMHOST_REGISTRY_AUTH` (`USER:PASSWORD`), else none.
fn auth() -> RegistryAuth {
    match std::env::var("WASMHOST_REGISTRY_AUTH").ok().and_then(|a| {
        a.split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))
    }) {
        Some((user, password)) => RegistryAuth::Basic(user, password),
        None => RegistryAuth::Anonymous,
    }
}

fn install_crypto() {
    // reqwest's rustls needs a process-wide provider; ring is the one the
    // rest of the host links. Installing twice is refused, harmlessly.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn hex_sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Pushes the component `file` as `REPO:TAG` of `source` (whose tag is
/// required); returns the manifest's URL.
pub async fn push(file: &Path, source: &Source) -> Result<String> {
    install_crypto();
    let Some(tag) = &source.tag else {
        bail!("give the tag to push as: {source}:VERSION");
    };
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    crate::loader::check_header(&bytes)
        .with_context(|| format!("{} cannot be pushed", file.display()))?;
    let digest = format!("sha256:{}", hex_sha256(&bytes));
    let config = serde_json::json!({
        "created": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [digest],
    });
    let layer = ImageLayer::new(bytes::Bytes::from(bytes), WASM_LAYER.to_string(), None);
    let config = Config::new(
        bytes::Bytes::from(serde_json::to_vec(&config)?),
        WASM_CONFIG.to_string(),
        None,
    );
    let pushed = client(source)
        .push(&reference(source, tag), &[layer], config, &auth(), None)
        .await
        .with_context(|| format!("cannot push to {source}"))?;
    Ok(pushed.manifest_url)
}

/// What one look at a source did.
#[derive(Debug, Default, PartialEq)]
pub struct Pulled {
    /// Files written, as `NAME@TAG.wasm`.
    pub written: Vec<String>,
    /// Tags refused, with why (each reported once per run by [`Follower`]).
    pub refused: BTreeMap<String, String>,
}

/// Looks at `source` once: pulls every version tag (or the pinned one)
/// not yet in `plugins`.
pub async fn pull_new(source: &Source, plugins: &Path) -> Result<Pulled> {
    install_crypto();
    let client = client(source);
    let auth = auth();
    let tags = match &source.tag {
        Some(tag) => vec![tag.clone()],
        None => {
            let listed = client
                .list_tags(&reference(source, "latest"), &auth, None, None)
                .await
                .with_context(|| format!("cannot list the tags of {source}"))?;
            listed
                .tags
                .into_iter()
                .filter(|t| semver::Version::parse(t).is_ok())
                .collect()
        }
    };
    let mut pulled = Pulled::default();
    std::fs::create_dir_all(plugins)
        .with_context(|| format!("cannot create the plugins directory {}", plugins.display()))?;
    for tag in tags {
        let name = format!("{}@{tag}.wasm", source.service());
        let target = plugins.join(&name);
        if target.exists() {
            continue;
        }
        match pull_one(&client, &auth, source, &tag, &target).await {
            Ok(()) => pulled.written.push(name),
            Err(error) => {
                pulled.refused.insert(tag, format!("{error:#}"));
            }
        }
    }
    Ok(pulled)
}

async fn pull_one(
    client: &Client,
    auth: &RegistryAuth,
    source: &Source,
    tag: &str,
    target: &Path,
) -> Result<()> {
    let reference = reference(source, tag);
    let (manifest, digest) = client
        .pull_image_manifest(&reference, auth)
        .await
        .context("cannot read the manifest")?;
    if let Some(pin) = &source.digest {
        if *pin != digest {
            bail!("the manifest is {digest}, not the pinned {pin}");
        }
    }
    let layer = match manifest.layers.as_slice() {
        [one] => one,
        layers => layers
            .iter()
            .find(|l| l.media_type == WASM_LAYER)
            .context("the manifest has no application/wasm layer")?,
    };
    if layer.size < 0 || layer.size as u64 > MAX_LAYER_BYTES {
        bail!(
            "the layer is {} bytes, above the {MAX_LAYER_BYTES} allowed",
            layer.size
        );
    }
    let mut bytes = Vec::with_capacity(layer.size as usize);
    client
        .pull_blob(&reference, layer, &mut bytes)
        .await
        .context("refused: the layer failed its digest check, or could not be read")?;
    let actual = format!("sha256:{}", hex_sha256(&bytes));
    if actual != layer.digest {
        bail!(
            "refused: the layer's content is {actual}, not the {} its manifest names",
            layer.digest
        );
    }
    let tmp = hidden_tmp(target);
    std::fs::write(&tmp, &bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, target)
        .with_context(|| format!("cannot move {} into place", target.display()))?;
    Ok(())
}

fn hidden_tmp(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.oci-tmp"))
}

/// Keeps the plugins directory up to date with some sources, saying each
/// refusal or unreachable registry once until it changes.
pub struct Follower {
    sources: Vec<Source>,
    plugins: PathBuf,
    said: BTreeMap<String, String>,
}

impl Follower {
    /// Follows `sources` into `plugins`.
    pub fn new(sources: Vec<Source>, plugins: PathBuf) -> Self {
        Self {
            sources,
            plugins,
            said: BTreeMap::new(),
        }
    }

    /// Looks at every source once, pulling what is new.
    pub async fn look(&mut self) {
        for source in &self.sources {
            let key = source.to_string();
            match pull_new(source, &self.plugins).await {
                Ok(pulled) => {
                    if self.said.remove(&key).is_some() {
                        tracing::info!(source = %key, "the registry answers again");
                    }
                    for file in &pulled.written {
                        tracing::info!(source = %key, %file, "pulled from the registry (digest checked)");
                    }
                    for (tag, why) in pulled.refused {
                        let at = format!("{key}:{tag}");
                        if self.said.get(&at) != Some(&why) {
                            tracing::error!(source = %key, %tag, error = %why, "a component from the registry was refused; what is loaded keeps serving");
                            self.said.insert(at, why);
                        }
                    }
                }
                Err(error) => {
                    let why = format!("{error:#}");
                    if self.said.get(&key) != Some(&why) {
                        tracing::warn!(source = %key, error = %why, "the registry cannot be read; what is loaded keeps serving");
                        self.said.insert(key, why);
                    }
                }
            }
        }
    }

    /// Runs forever: looks again every `interval`.
    pub async fn run(mut self, interval: Duration) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.look().await;
        }
    }
}
