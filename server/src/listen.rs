//! Accepting connections, for plain HTTP and TLS alike: a cap on open connections,
//! `TCP_NODELAY`, a deadline for each request's headers (slowloris) and for a new
//! connection's first request.

use axum_server::accept::Accept;
use std::future::{ready, Ready};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open files the process needs besides connection sockets: SQLite's database, WAL and
/// shared-memory files or the PostgreSQL pool, the listener, epoll, logs and TLS files, with
/// room to spare. 20 000 files less these is the 19 700 agents measured on one server in
/// docs/BENCHMARKS.md ("one server on SQLite, 19 000 agents").
const RESERVED_FILES: u64 = 300;

/// The connection cap: `NIXDECK_MAX_CONNECTIONS`, or else what the open-file limit leaves for
/// sockets. The soft limit is raised to the hard limit first (systemd's `LimitNOFILE`,
/// `ulimit -Hn`), as a server that holds one socket per agent needs; a fixed default either
/// wasted the limit (the old 16 384 under 20 000) or exceeded it, and then accepts failed with
/// "too many open files" instead of the cap's clean refusal.
pub fn connection_cap(configured: Option<u64>) -> u64 {
    let files = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(files) => files,
        Err(e) => {
            tracing::warn!("reading the open-file limit: {e}; assuming 1024");
            1024
        }
    };
    let fits = files.saturating_sub(RESERVED_FILES).max(1);
    match configured {
        None => {
            tracing::info!("connection cap {fits} (open-file limit {files}, {RESERVED_FILES} kept for other files)");
            fits
        }
        Some(cap) => {
            if cap > fits {
                tracing::warn!(
                    "NIXDECK_MAX_CONNECTIONS={cap} is above the {fits} connections the open-file \
                     limit ({files}) leaves: past {fits}, connections may fail with \
                     \"too many open files\" (raise LimitNOFILE, or leave the setting unset)"
                );
            }
            cap
        }
    }
}

/// Accepts a connection only while fewer than the cap are open; each holds its slot until
/// it closes. It also sets `TCP_NODELAY`: without it a response's last segment can wait
/// for the client's delayed ACK, 40 ms on Linux; that was 3 % of dashboard renders (P4's
/// p99 in docs/BENCHMARKS.md).
#[derive(Clone)]
pub struct CappedAcceptor {
    slots: Arc<Semaphore>,
}

impl CappedAcceptor {
    pub fn new(max: usize) -> Self {
        CappedAcceptor {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
        }
    }
}

impl<S> Accept<TcpStream, S> for CappedAcceptor {
    type Stream = CappedStream;
    type Service = S;
    type Future = Ready<io::Result<(CappedStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let Ok(slot) = self.slots.clone().try_acquire_owned() else {
            tracing::warn!("connection refused: the connection cap is reached");
            return ready(Err(io::Error::other("connection cap reached")));
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY: {e}");
        }
        ready(Ok((
            CappedStream {
                stream,
                _slot: slot,
            },
            service,
        )))
    }
}

/// A connection that gives its slot back when it closes.
pub struct CappedStream {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
