//! A cluster replica following the cluster's release document: each change
//! announced on its channel, and every [`POLL`] a look at the epoch in case
//! a notice was lost, put in effect through [`Control::apply`] like any
//! other change.
//!
//! Invariant: a replica applies a document only when its epoch is newer
//! than the one in effect, so notices that arrive late or twice change
//! nothing; while Redis is away the replica keeps serving the last
//! document it applied.

use crate::control::{Change, Control};
use crate::shared_release::{SharedRelease, POLL};
use anyhow::Result;
use futures::StreamExt;
use std::sync::Arc;

/// Brings this replica to the document now: applies it if it is newer, or
/// writes the replica's own state as the first one when none exists yet.
pub async fn join(control: &Control, shared: &SharedRelease) -> Result<()> {
    loop {
        match shared.load().await? {
            Some(doc) => {
                let epoch = doc.epoch;
                control
                    .apply(Change::Remote(doc))
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                tracing::info!(redis = %shared.addr(), epoch, "serving the cluster's release document");
                return Ok(());
            }
            None => {
                let own = control.snapshot().release.clone();
                if let crate::shared_release::Saved::Stored(epoch) = shared.save(&own, 0).await? {
                    let mut doc = own;
                    doc.epoch = epoch;
                    control
                        .apply(Change::Remote(doc))
                        .await
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    tracing::info!(redis = %shared.addr(), epoch, "wrote the cluster's first release document");
                    return Ok(());
                }
                // Another replica wrote the first one meanwhile: take it.
            }
        }
    }
}

/// Runs forever: applies each newer document as it is announced, or found
/// on a poll.
pub async fn follow(control: Arc<Control>, shared: SharedRelease) {
    let mut notices: Option<std::pin::Pin<Box<dyn futures::Stream<Item = u64> + Send>>> = None;
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let announced = async {
            match &mut notices {
                Some(stream) => stream.next().await,
                None => std::future::pending().await,
            }
        };
        let check = tokio::select! {
            epoch = announced => match epoch {
                Some(epoch) => epoch > control.snapshot().release.epoch,
                None => {
                    tracing::warn!(redis = %shared.addr(), "the release notices stopped; polling every 2 s until they resume");
                    notices = None;
                    true
                }
            },
            _ = poll.tick() => {
                if notices.is_none() {
                    notices = match shared.notices().await {
                        Ok(stream) => Some(Box::pin(stream)),
                        Err(_) => None,
                    };
                }
                match shared.epoch().await {
                    Ok(epoch) => epoch > control.snapshot().release.epoch,
                    Err(_) => false,
                }
            }
        };
        if check {
            catch_up(&control, &shared).await;
        }
    }
}

/// Applies the document now, if it is newer.
async fn catch_up(control: &Control, shared: &SharedRelease) {
    match shared.load().await {
        Ok(Some(doc)) if doc.epoch > control.snapshot().release.epoch => {
            if let Err(error) = control.apply(Change::Remote(doc)).await {
                tracing::error!(%error, "the cluster's release document could not be applied");
            }
        }
        Ok(_) => {}
        // Unreachable is logged once by the connection; a document that
        // does not parse is an operator's to fix, and said each time.
        Err(error) if shared.unreachable() => {
            tracing::debug!(error = %format!("{error:#}"), "the release document could not be read");
        }
        Err(error) => tracing::error!(
            error = %format!("{error:#}"),
            "the cluster's release document is refused; serving the last one applied"
        ),
    }
}
