//! The listener's connection discipline: how many connections the server
//! holds, from whom, and for how long a peer may stay silent.
//!
//! Without it a flood of silent sockets (or ones that only sent the
//! HTTP/2 preface) is held for minutes, uses every file descriptor, and
//! new clients time out while the accept loop spins. Here:
//!
//! - **Caps.** At most [`ConnectionLimits::max_connections`] connections
//!   at once, and at most `max_per_peer` from one IP address. Both sit
//!   below the process's file-descriptor limit, so the database, the
//!   anchor file and the HSM always have descriptors left. A connection
//!   over a cap is accepted and closed at once (the client sees a reset,
//!   not a hang) and counted in a warning logged at most every 10 s.
//!   Clients already connected are served as before.
//! - **Handshake timeout.** A peer must send the first bytes of its
//!   handshake (the 24-byte HTTP/2 preface, or a TLS ClientHello, which is
//!   longer) within `handshake_timeout`; the TLS handshake as a whole has
//!   the same budget (tonic's TLS timeout).
//! - **Idle timeout.** A peer that sends nothing for `idle_timeout` is
//!   disconnected. The server pings every connection that has been quiet
//!   for a third of that, and drops one that does not answer within
//!   another third (HTTP/2 keepalive), so a live client — even one
//!   waiting on a long call — always answers in time, and a dead or silent
//!   one is gone within the timeout.
//!
//! The per-peer table holds only peers with a connection open, so it is
//! bounded by `max_connections`.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo};

/// Bytes a peer must send before the handshake deadline no longer applies:
/// the HTTP/2 client preface (a TLS ClientHello is longer).
const HANDSHAKE_BYTES: u64 = 24;

/// The default cap on connections, when the descriptor limit allows it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// The default cap on connections from one IP address.
pub const DEFAULT_MAX_PER_PEER: usize = 512;
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// How many connections the server holds, and for how long.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Connections open at once; `None` derives it from the descriptor
    /// limit (and never above it when set).
    pub max_connections: Option<usize>,
    pub max_per_peer: usize,
    pub handshake_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: None,
            max_per_peer: DEFAULT_MAX_PER_PEER,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

impl ConnectionLimits {
    /// The HTTP/2 keepalive: ping after this much quiet...
    pub fn keepalive_interval(&self) -> Duration {
        self.idle_timeout / 3
    }

    /// ...and drop the connection if the ping is not answered in this.
    pub fn keepalive_timeout(&self) -> Duration {
        self.idle_timeout / 3
    }

    /// The connection cap actually used: the configured one (or the
    /// default), but never more than the descriptors the process can open
    /// less a reserve of a quarter (at least 64) for everything else.
    pub fn effective_max(&self, fd_limit: Option<u64>) -> usize {
        let wanted = self.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
        match fd_limit {
            Some(limit) => {
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                let reserve = (limit / 4).max(64);
                wanted.min(limit.saturating_sub(reserve).max(16))
            }
            None => wanted,
        }
    }
}

/// Raises the soft limit on open files to the hard limit (as Go's runtime
/// does), and returns the limit now in force, if it can be read.
pub fn raise_fd_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let (Some(cur), max) = (lim.current, lim.maximum)
        && max.is_none_or(|m| m > cur)
    {
        // An unlimited hard limit is not a number to raise to; stop at a
        // million descriptors.
        let target = max.unwrap_or(1 << 20).min(1 << 20).max(cur);
        lim.current = Some(target);
        if setrlimit(Resource::Nofile, lim).is_err() {
            lim = getrlimit(Resource::Nofile);
        }
    }
    lim.current
}

/// Who is connected: the global cap and the count per peer.
struct Admission {
    slots: Arc<Semaphore>,
    per_peer: Mutex<HashMap<IpAddr, usize>>,
    max_per_peer: usize,
}

/// A connection's place under the caps; given back on drop.
struct Slot {
    admission: Arc<Admission>,
    peer: IpAddr,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut peers = self
            .admission
            .per_peer
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = peers.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                peers.remove(&self.peer);
            }
        }
    }
}

/// Why a connection was refused.
#[derive(Clone, Copy, Debug)]
enum Refusal {
    Full,
    PeerFull,
}

impl Admission {
    fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Slot, Refusal> {
        let slot = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let mut peers = self.per_peer.lock().unwrap_or_else(|p| p.into_inner());
        let n = peers.entry(peer).or_insert(0);
        if *n >= self.max_per_peer {
            return Err(Refusal::PeerFull);
        }
        *n += 1;
        Ok(Slot {
            admission: self.clone(),
            peer,
            _slot: slot,
        })
    }
}

/// Refusals since the last warning; one warning per 10 s at most.
struct RefusalLog {
    full: u64,
    peer_full: u64,
    last: Option<Instant>,
}

impl RefusalLog {
    fn note(&mut self, why: Refusal, peer: SocketAddr, max: usize, per_peer: usize) {
        match why {
            Refusal::Full => self.full += 1,
            Refusal::PeerFull => self.peer_full += 1,
        }
        let now = Instant::now();
        if self
            .last
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
        {
            tracing::warn!(
                at_connection_cap = self.full,
                at_peer_cap = self.peer_full,
                max_connections = max,
                max_connections_per_peer = per_peer,
                last_peer = %peer.ip(),
                "refusing connections over the caps"
            );
            self.full = 0;
            self.peer_full = 0;
            self.last = Some(now);
        }
    }
}

/// How many connections are open now.
#[derive(Clone)]
pub struct OpenConnections {
    admission: Arc<Admission>,
    max: usize,
}

impl OpenConnections {
    pub fn open(&self) -> usize {
        self.max - self.admission.slots.available_permits()
    }

    /// The cap in force.
    pub fn max(&self) -> usize {
        self.max
    }
}

/// The accepted connections, as tonic's `serve_with_incoming` takes them:
/// an accept loop runs until `stop`, admitting each connection under the
/// caps and handing it on with its timeouts.
pub fn incoming(
    listener: TcpListener,
    limits: ConnectionLimits,
    max_connections: usize,
    mut stop: watch::Receiver<bool>,
) -> (
    tokio_stream::wrappers::ReceiverStream<io::Result<Guarded>>,
    OpenConnections,
) {
    let (tx, rx) = mpsc::channel(64);
    let admission = Arc::new(Admission {
        slots: Arc::new(Semaphore::new(max_connections)),
        per_peer: Mutex::new(HashMap::new()),
        max_per_peer: limits.max_per_peer.max(1),
    });
    let gauge = OpenConnections {
        admission: admission.clone(),
        max: max_connections,
    };
    tokio::spawn(async move {
        let mut refusals = RefusalLog {
            full: 0,
            peer_full: 0,
            last: None,
        };
        loop {
            let accepted = tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                a = listener.accept() => a,
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) if is_per_connection(&e) => continue,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of
                    // spinning on the same error.
                    tracing::warn!(error = %e, "accept failed; retrying in 100 ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let slot = match admission.admit(peer.ip()) {
                Ok(slot) => slot,
                Err(why) => {
                    refusals.note(why, peer, max_connections, admission.max_per_peer);
                    drop(socket);
                    continue;
                }
            };
            // TCP_NODELAY: without it a response written as several small
            // frames waits on the peer's delayed ACK (~40 ms a call).
            let _ = socket.set_nodelay(true);
            let conn = Guarded::new(socket, slot, &limits);
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    (tokio_stream::wrappers::ReceiverStream::new(rx), gauge)
}

/// Accept errors that concern one connection only (it was reset before
/// it was accepted), not the listener.
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// An admitted connection: the socket, its place under the caps (given
/// back when the connection closes), and the deadline by which the peer
/// must next send something.
pub struct Guarded {
    io: TcpStream,
    _slot: Slot,
    received: u64,
    idle_timeout: Duration,
    last_read: Instant,
    deadline: Pin<Box<Sleep>>,
}

impl Guarded {
    /// The peer's address (unspecified if the socket lost it).
    pub fn peer(&self) -> std::net::SocketAddr {
        self.io
            .peer_addr()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    fn new(io: TcpStream, slot: Slot, limits: &ConnectionLimits) -> Guarded {
        let now = Instant::now();
        Guarded {
            io,
            _slot: slot,
            received: 0,
            idle_timeout: limits.idle_timeout,
            last_read: now,
            deadline: Box::pin(tokio::time::sleep_until(now + limits.handshake_timeout)),
        }
    }

    /// Whether the peer's time is up. Reads only note when they happened;
    /// the timer is moved when it fires early, not on every read.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.deadline.as_mut().poll(cx).is_pending() {
                return false;
            }
            if self.received < HANDSHAKE_BYTES {
                return true;
            }
            let due = self.last_read + self.idle_timeout;
            if due <= Instant::now() {
                return true;
            }
            self.deadline.as_mut().reset(due);
        }
    }
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                if n > 0 {
                    let was = self.received;
                    self.received = was.saturating_add(n);
                    self.last_read = Instant::now();
                    if was < HANDSHAKE_BYTES && self.received >= HANDSHAKE_BYTES {
                        let due = self.last_read + self.idle_timeout;
                        self.deadline.as_mut().reset(due);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.expired(cx) {
                    let what = if self.received < HANDSHAKE_BYTES {
                        "no handshake within the handshake timeout"
                    } else {
                        "peer silent for the idle timeout"
                    };
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.io.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_stays_below_the_descriptor_limit() {
        let l = ConnectionLimits::default();
        assert_eq!(l.effective_max(None), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(l.effective_max(Some(1024)), 768);
        assert_eq!(l.effective_max(Some(200)), 136);
        assert_eq!(l.effective_max(Some(1 << 20)), DEFAULT_MAX_CONNECTIONS);
        assert_eq!(l.effective_max(Some(10)), 16);
        let set = ConnectionLimits {
            max_connections: Some(100),
            ..l
        };
        assert_eq!(set.effective_max(Some(1024)), 100);
    }

    #[tokio::test]
    async fn per_peer_count_is_given_back_and_forgotten() {
        let admission = Arc::new(Admission {
            slots: Arc::new(Semaphore::new(3)),
            per_peer: Mutex::new(HashMap::new()),
            max_per_peer: 2,
        });
        let a: IpAddr = [127, 0, 0, 1].into();
        let b: IpAddr = [127, 0, 0, 2].into();
        let a1 = admission.admit(a).unwrap();
        let _a2 = admission.admit(a).unwrap();
        assert!(matches!(admission.admit(a), Err(Refusal::PeerFull)));
        let b1 = admission.admit(b).unwrap();
        assert!(matches!(admission.admit(b), Err(Refusal::Full)));
        drop(b1);
        assert!(admission.per_peer.lock().unwrap().get(&b).is_none());
        drop(a1);
        let _a3 = admission.admit(a).unwrap();
    }
}
