//! The control plane's side of ejections: the request path takes a failing
//! version out of selection at once (see [`crate::resilience::Outlier`]) and
//! reports it here; each report becomes a [`Change::Ejected`], so the
//! release history says which version was ejected, why and for how long,
//! and a canary whose candidate is ejected twice in one step is rolled back.
//!
//! Invariant: the request path never waits for this: reports go through an
//! unbounded channel (at most one per version per penalty, 30 s or more).

use crate::control::{Change, Control};
use crate::dispatch::EjectionNotice;
use std::sync::Arc;
use tokio::sync::mpsc::UnboundedReceiver;

/// Records every ejection the request path reports, until it stops.
pub async fn recorder(control: Arc<Control>, mut notices: UnboundedReceiver<EjectionNotice>) {
    while let Some(notice) = notices.recv().await {
        let EjectionNotice {
            service,
            version,
            ejection,
        } = notice;
        let detail = format!(
            "for {}s (ejection {}): {}",
            ejection.penalty.as_secs(),
            ejection.count,
            ejection.reason
        );
        let change = Change::Ejected {
            service: service.to_string(),
            version: version.to_string(),
            detail,
        };
        if let Err(error) = control.apply(change).await {
            tracing::error!(%service, %version, %error, "the ejection could not be recorded");
        }
    }
}
