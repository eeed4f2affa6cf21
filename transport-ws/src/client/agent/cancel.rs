//! A job's cancellation: a token the program awaits or checks, fired by the
//! driver when the coordinator cancels the task, gives it to another agent, or a
//! stop grace ends.

use tokio::sync::watch;

/// Says when a job must stop: the coordinator cancelled its task or gave it to
/// another agent, or the agent's stop grace ran out. Cheap to clone; every clone
/// sees the same cancellation.
///
/// A job whose outcome was taken is never cancelled afterwards: its token then
/// stays quiet for good.
#[derive(Debug, Clone)]
pub struct CancelToken {
    cancelled: watch::Receiver<bool>,
}

/// The driver's side of a [`CancelToken`].
#[derive(Debug)]
pub(super) struct CancelSource {
    cancel: watch::Sender<bool>,
}

impl CancelSource {
    /// A source and its first token.
    pub(super) fn new() -> (CancelSource, CancelToken) {
        let (cancel, cancelled) = watch::channel(false);
        (CancelSource { cancel }, CancelToken { cancelled })
    }

    /// Fires every token of this source.
    pub(super) fn cancel(&self) {
        self.cancel.send_replace(true);
    }
}

impl CancelToken {
    /// True once the job is cancelled.
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Resolves once the job is cancelled (at once if it already is); never for
    /// a job that ends without being cancelled. Use it in `tokio::select!` beside
    /// the work.
    pub async fn cancelled(&self) {
        let mut cancelled = self.cancelled.clone();
        if cancelled.wait_for(|c| *c).await.is_err() {
            // The source is gone without a cancellation: the job ended normally.
            std::future::pending::<()>().await;
        }
    }
}
