//! Connection admission: at most `--max-connections` sockets open at once. Each
//! admitted stream carries its slot for as long as it lives, through a
//! WebSocket upgrade too; a connection over the limit is answered with a short
//! 503 written straight on the socket, then closed.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The whole answer to a connection over the limit.
pub const OVER_CAPACITY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: application/json\r\n\
retry-after: 1\r\n\
connection: close\r\n\
content-length: 86\r\n\
\r\n\
{\"error\":\"too_many_connections\",\"detail\":\"the coordinator is at its connection limit\"}";

/// Refusals answered at once with a lingering close; past this many in flight, a
/// refusal is a single non-blocking write and an immediate close.
const LINGERING_REFUSALS: usize = 64;

/// The longest a refused connection is kept to deliver its answer.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// What a refused connection may send while its answer is delivered; past it,
/// the socket is closed.
const REFUSAL_DRAIN_BYTES: usize = 64 * 1024;

/// Open files a coordinator needs besides its connections: the database and
/// its journal, the listener, the runtime's own, a margin.
pub const SPARE_OPEN_FILES: u64 = 64;

/// The soft limit on open files to ask for so that `max_connections` sockets
/// can be open at once, given the process's `soft` and `hard` limits: `None`
/// when the soft limit is already enough (or already the hard one), else
/// what is needed, at most the hard limit.
pub fn open_files_wanted(soft: u64, hard: u64, max_connections: usize) -> Option<u64> {
    let need = (max_connections as u64).saturating_add(SPARE_OPEN_FILES);
    (soft < need && soft < hard).then(|| need.min(hard))
}

/// Counts open connections against a limit.
#[derive(Debug, Clone)]
pub struct Limiter {
    slots: Arc<Semaphore>,
    lingering: Arc<Semaphore>,
    refused: Arc<AtomicU64>,
}

impl Limiter {
    /// A limiter of `max_connections` open connections (at least one).
    pub fn new(max_connections: usize) -> Limiter {
        Limiter {
            slots: Arc::new(Semaphore::new(
                max_connections.clamp(1, Semaphore::MAX_PERMITS),
            )),
            lingering: Arc::new(Semaphore::new(LINGERING_REFUSALS)),
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// `stream` with a slot, or back when every slot is taken.
    pub fn admit<S>(&self, stream: S) -> Result<Admitted<S>, S> {
        match self.slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(Admitted {
                inner: stream,
                _slot: slot,
            }),
            Err(_) => Err(stream),
        }
    }

    /// Answers a connection that [`Limiter::admit`] gave back with
    /// [`OVER_CAPACITY`] and closes it, in the background and within
    /// [`REFUSAL_TIME`]; when many refusals are already under way, with one
    /// non-blocking write and an immediate close. Logs the first refusal and
    /// every thousandth.
    pub fn refuse(&self, stream: TcpStream) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if refused == 1 || refused.is_multiple_of(1_000) {
            tracing::warn!(
                refused,
                "connections over --max-connections answered 503 and closed"
            );
        }
        match self.lingering.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(async move {
                    answer_and_close(stream, REFUSAL_TIME).await;
                    drop(permit);
                });
            }
            Err(_) => {
                let _ = stream.try_write(OVER_CAPACITY);
            }
        }
    }
}

/// Writes [`OVER_CAPACITY`], ends the sending side and reads what the client
/// sends until it closes (so that closing does not reset the connection before
/// the client has read the answer), all within `within` and
/// [`REFUSAL_DRAIN_BYTES`].
pub async fn answer_and_close<S>(mut stream: S, within: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deliver = async {
        stream.write_all(OVER_CAPACITY).await?;
        stream.shutdown().await?;
        let mut buf = [0u8; 4096];
        let mut drained = 0;
        while drained < REFUSAL_DRAIN_BYTES {
            match stream.read(&mut buf).await? {
                0 => break,
                n => drained += n,
            }
        }
        Ok::<(), io::Error>(())
    };
    let _ = tokio::time::timeout(within, deliver).await;
}

/// A stream holding one connection slot, given back when the stream is dropped.
#[derive(Debug)]
pub struct Admitted<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
}

impl<S: AsyncRead + Unpin> AsyncRead for Admitted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Admitted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests;
