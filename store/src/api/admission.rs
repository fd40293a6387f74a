//! Admission control for the data plane's expensive requests.
//!
//! Two kinds of request cost a node far more than a write or a point read,
//! and arrive all at once when a fleet of data-plane processes restarts:
//!
//! - a **bootstrap**, the prefix read a `Replica` makes when it has no state
//!   (`GET /v1/kv/{prefix}?prefix=true&bootstrap=true`): a scan of the whole
//!   prefix and a copy of it on the wire;
//! - a **watch catch-up**, a watch whose start revision is older than the
//!   node's in-memory window, so that it replays history from storage.
//!
//! Each has a bound per node. A request beyond it is answered at once with
//! `429` (`too_many_bootstraps`, `too_many_catchups`) and `Retry-After`; the
//! client backs off with jitter and tries again, here or on another node.
//! A bootstrap holds its permit until its response body is written (or the
//! client goes away); a catch-up until the stream reaches the window. A
//! bootstrap the snapshot buffer answers with its unchanged copy of the
//! prefix (no scan, bytes shared by every such answer) takes no permit:
//! `api::kv::get` asks for one only for bootstraps that scan or stream. Writes,
//! linearizable reads, plain range reads and live watch delivery are never
//! counted here, so they keep their priority. A bound of 0 turns that kind
//! of control off.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::{ApiError, ErrorCode};
use crate::metrics::{Gauge, Metrics};

/// Bounds of the admission control of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionOptions {
    /// Most replica bootstraps that scan or stream served at once (0 =
    /// unbounded).
    pub max_bootstraps: usize,
    /// Most watch streams catching up from storage at once (0 = unbounded).
    pub max_catchups: usize,
}

impl Default for AdmissionOptions {
    fn default() -> Self {
        AdmissionOptions {
            max_bootstraps: 32,
            max_catchups: 64,
        }
    }
}

/// The node's admission permits.
#[derive(Debug)]
pub struct Admission {
    options: AdmissionOptions,
    bootstraps: Option<Arc<Semaphore>>,
    catchups: Option<Arc<Semaphore>>,
    metrics: Arc<Metrics>,
}

/// A taken admission slot: released (and its gauge lowered) on drop.
#[derive(Debug)]
pub struct AdmissionPermit {
    _permit: Option<OwnedSemaphorePermit>,
    metrics: Arc<Metrics>,
    gauge: fn(&Metrics) -> &Gauge,
}

impl Drop for AdmissionPermit {
    fn drop(&mut self) {
        (self.gauge)(&self.metrics).dec();
    }
}

fn semaphore(max: usize) -> Option<Arc<Semaphore>> {
    (max > 0).then(|| Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))))
}

impl Admission {
    /// Admission control with `options`, counting into `metrics`.
    pub fn new(options: AdmissionOptions, metrics: Arc<Metrics>) -> Self {
        Admission {
            bootstraps: semaphore(options.max_bootstraps),
            catchups: semaphore(options.max_catchups),
            options,
            metrics,
        }
    }

    /// The bounds in force.
    pub fn options(&self) -> AdmissionOptions {
        self.options
    }

    /// A bootstrap slot, or `429 too_many_bootstraps`.
    pub fn try_bootstrap(&self) -> Result<AdmissionPermit, ApiError> {
        self.try_take(
            self.bootstraps.as_ref(),
            |m| &m.bootstraps_running,
            || {
                self.metrics.bootstraps_refused.inc();
                ApiError::refused(
                    ErrorCode::TooManyBootstraps,
                    format!(
                        "this node serves its maximum of {} replica bootstraps at once; \
                         retry after the Retry-After delay, or on another node",
                        self.options.max_bootstraps
                    ),
                )
            },
        )
    }

    /// A catch-up slot, or `429 too_many_catchups`.
    pub fn try_catchup(&self) -> Result<AdmissionPermit, ApiError> {
        self.try_take(
            self.catchups.as_ref(),
            |m| &m.catchups_running,
            || {
                self.metrics.catchups_refused.inc();
                ApiError::refused(
                    ErrorCode::TooManyCatchups,
                    format!(
                        "this node replays history for its maximum of {} watches at once; \
                         retry after the Retry-After delay, or on another node",
                        self.options.max_catchups
                    ),
                )
            },
        )
    }

    fn try_take(
        &self,
        semaphore: Option<&Arc<Semaphore>>,
        gauge: fn(&Metrics) -> &Gauge,
        refuse: impl FnOnce() -> ApiError,
    ) -> Result<AdmissionPermit, ApiError> {
        let permit = match semaphore {
            None => None,
            Some(s) => Some(s.clone().try_acquire_owned().map_err(|_| refuse())?),
        };
        gauge(&self.metrics).inc();
        Ok(AdmissionPermit {
            _permit: permit,
            metrics: self.metrics.clone(),
            gauge,
        })
    }
}

/// `response` with `permit`, if any, held until its body is written in full
/// or dropped (the client went away).
pub fn hold_until_sent(response: Response, permit: Option<AdmissionPermit>) -> Response {
    let Some(permit) = permit else {
        return response;
    };
    response.map(|inner| {
        Body::new(Held {
            inner,
            permit: Some(permit),
        })
    })
}

/// A body that releases its permit as soon as it ends.
struct Held {
    inner: Body,
    permit: Option<AdmissionPermit>,
}

impl HttpBody for Held {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) | Poll::Ready(Some(Err(_))) = &polled {
            self.permit = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
