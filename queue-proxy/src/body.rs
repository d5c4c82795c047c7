//! The response body as the queue-proxy streams it: holds the request's breaker slot and
//! in-flight mark until the last byte, and cuts the body when the revision timeout or the idle
//! timeout passes (the status line has already gone out by then, as in Knative).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::BoxError;

pin_project_lite::pin_project! {
    /// A body that keeps `G` alive until it ends and enforces deadlines.
    pub struct GuardedBody<B, G> {
        #[pin]
        inner: B,
        #[pin]
        deadline: Sleep,
        #[pin]
        idle: Option<Sleep>,
        idle_timeout: Option<Duration>,
        guard: Option<G>,
    }
}

impl<B, G> GuardedBody<B, G> {
    /// Wraps `inner`, ending it with an error at `deadline` or after `idle_timeout` of silence.
    pub fn new(inner: B, guard: G, deadline: Instant, idle_timeout: Option<Duration>) -> Self {
        Self {
            inner,
            deadline: tokio::time::sleep_until(deadline),
            idle: idle_timeout.map(tokio::time::sleep),
            idle_timeout,
            guard: Some(guard),
        }
    }
}

/// The body was cut by a timeout.
#[derive(Debug, thiserror::Error)]
#[error("response body cut: {0}")]
pub struct BodyTimeout(&'static str);

impl<B, G> Body for GuardedBody<B, G>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if this.guard.is_none() {
            return Poll::Ready(None);
        }
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(None) => {
                this.guard.take();
                return Poll::Ready(None);
            }
            Poll::Ready(Some(frame)) => {
                if let (Some(idle), Some(timeout)) =
                    (this.idle.as_mut().as_pin_mut(), *this.idle_timeout)
                {
                    idle.reset(Instant::now() + timeout);
                }
                if frame.is_err() {
                    this.guard.take();
                }
                return Poll::Ready(Some(frame.map_err(Into::into)));
            }
            Poll::Pending => {}
        }
        if this.deadline.poll(cx).is_ready() {
            this.guard.take();
            return Poll::Ready(Some(Err(BodyTimeout("revision timeout").into())));
        }
        if let Some(idle) = this.idle.as_pin_mut()
            && idle.poll(cx).is_ready()
        {
            this.guard.take();
            return Poll::Ready(Some(Err(BodyTimeout("idle timeout").into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.guard.is_none() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
