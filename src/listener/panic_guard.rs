//! Running a handler so that its panic becomes an error: shared by the listener container
//! ([`ListenerContainer`](super::ListenerContainer)) and the share container
//! ([`ShareContainer`](super::ShareContainer)), whose handlers are called the same way.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use tracing::Instrument;

use super::handler::BoxFuture;

/// A handler panicked. The listener container stops with `StopReason::Error` (after committing
/// the work finished before) and does not acknowledge the record or batch; the share container
/// treats the record as a failed delivery with this error.
#[derive(Debug, thiserror::Error)]
#[error("the handler panicked: {0}")]
pub(crate) struct HandlerPanicked(pub(crate) String);

/// The message of a caught panic (its `String` or `&str` payload).
pub(crate) fn panic_message(panic: Box<dyn std::any::Any + Send>) -> String {
    match panic.downcast::<String>() {
        Ok(s) => *s,
        Err(panic) => panic
            .downcast_ref::<&str>()
            .map_or_else(|| "(no message)".to_string(), |s| s.to_string()),
    }
}

/// Polls a future, catching a panic (a handler's panic must not unwind through the container's
/// task, which would skip the final commit, the leave and the `Stopped` event).
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::thread::Result<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let fut = &mut self.0;
        match catch_unwind(AssertUnwindSafe(|| Pin::new(&mut *fut).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// Calls a handler and runs its future inside `span` (`kafka.handler`; `Span::none()` for
/// none), turning a panic in either into [`HandlerPanicked`].
pub(crate) async fn call_guarded<T>(
    span: tracing::Span,
    call: impl FnOnce() -> BoxFuture<'static, T>,
) -> Result<T, HandlerPanicked> {
    let message = |panic| HandlerPanicked(panic_message(panic));
    let fut = {
        let _entered = span.enter();
        catch_unwind(AssertUnwindSafe(call)).map_err(message)?
    };
    CatchUnwind(fut.instrument(span)).await.map_err(message)
}
