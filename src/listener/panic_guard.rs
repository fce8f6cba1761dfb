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

/// What calling a handler gave: its result at once (a synchronous handler, whose work ran inside
/// the call), or the future to run.
pub(crate) enum HandlerCall<T> {
    /// The handler is done.
    Done(T),
    /// The handler's future, still to run.
    Future(BoxFuture<'static, T>),
}

impl<T> From<BoxFuture<'static, T>> for HandlerCall<T> {
    fn from(fut: BoxFuture<'static, T>) -> Self {
        HandlerCall::Future(fut)
    }
}

/// Calls a handler and runs its future (if it returned one) inside `span` (`kafka.handler`;
/// `Span::none()` for none), turning a panic in either into [`HandlerPanicked`].
pub(crate) async fn call_guarded<T, C: Into<HandlerCall<T>>>(
    span: tracing::Span,
    call: impl FnOnce() -> C,
) -> Result<T, HandlerPanicked> {
    let message = |panic| HandlerPanicked(panic_message(panic));
    let called = {
        let _entered = span.enter();
        catch_unwind(AssertUnwindSafe(|| call().into())).map_err(message)?
    };
    match called {
        HandlerCall::Done(result) => Ok(result),
        HandlerCall::Future(fut) => CatchUnwind(fut.instrument(span)).await.map_err(message),
    }
}

/// Calls a synchronous handler inside `span`, turning a panic into [`HandlerPanicked`]: no
/// future, for the container's synchronous record handlers.
pub(crate) fn call_guarded_now<T>(
    span: tracing::Span,
    call: impl FnOnce() -> T,
) -> Result<T, HandlerPanicked> {
    let _entered = span.enter();
    catch_unwind(AssertUnwindSafe(call)).map_err(|panic| HandlerPanicked(panic_message(panic)))
}
