//! A loopback TCP proxy that can delay, stall or cut the link, for benchmarks over a "remote"
//! database and for fault injection (`tc netem` is not available on these machines).
//!
//! Data is forwarded in both directions through a delay line: each chunk is held until its
//! arrival time plus the current delay, so pipelined requests stay pipelined. While stalled,
//! nothing is forwarded (the sockets stay open: a half-open link as TCP sees a dead path);
//! `cut` closes every current connection at once. Delays ride on tokio's timer, whose resolution
//! is 1 ms: a delay below that comes out as up to about 1 ms (measure the link, don't assume it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Controls one proxy; cheap to clone.
#[derive(Clone, Debug)]
pub struct Proxy {
    addr: SocketAddr,
    control: Arc<Control>,
}

#[derive(Debug)]
struct Control {
    delay_us: AtomicU64,
    stalled: watch::Sender<bool>,
    refuse: AtomicBool,
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`. Runs on the current runtime.
    pub async fn start(target: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stalled, _) = watch::channel(false);
        let control = Arc::new(Control {
            delay_us: AtomicU64::new(0),
            stalled,
            refuse: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let accept_control = control.clone();
        tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else { continue };
                if accept_control.refuse.load(Ordering::Relaxed) {
                    drop(client);
                    continue;
                }
                let control = accept_control.clone();
                let task = tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(target).await {
                        let _ = client.set_nodelay(true);
                        let _ = server.set_nodelay(true);
                        relay(client, server, control).await;
                    }
                });
                let mut connections = accept_control.connections.lock().unwrap();
                connections.retain(|t| !t.is_finished());
                connections.push(task);
            }
        });
        Ok(Proxy { addr, control })
    }

    /// The address to connect to instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Adds `delay` to every chunk in each direction (a round trip gains twice that).
    pub fn set_delay(&self, delay: Duration) {
        self.control.delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Stops (`true`) or resumes (`false`) forwarding in both directions, connections kept open.
    pub fn set_stalled(&self, stalled: bool) {
        self.control.stalled.send_replace(stalled);
    }

    /// Refuses (closes at once) new connections while `true`.
    pub fn set_refusing(&self, refuse: bool) {
        self.control.refuse.store(refuse, Ordering::Relaxed);
    }

    /// Closes every current connection (both sides see the socket close).
    pub fn cut(&self) {
        for task in self.control.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn relay(client: TcpStream, server: TcpStream, control: Arc<Control>) {
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pipe(client_read, server_write, control.clone());
    let down = pipe(server_read, client_write, control);
    // Either direction closing ends the connection.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

/// Reads from `from` into a delay line and writes each chunk to `to` once it is due and the
/// link is not stalled.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    control: Arc<Control>,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader_control = control.clone();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let delay = Duration::from_micros(reader_control.delay_us.load(Ordering::Relaxed));
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut stalled = control.stalled.subscribe();
        while let Some((due, chunk)) = rx.recv().await {
            // Only wait when there is something to wait for: the timer's 1 ms resolution would
            // otherwise slow every chunk of a bulk transfer (a base backup) to a crawl.
            if due > Instant::now() {
                tokio::time::sleep_until(due).await;
            }
            if stalled.wait_for(|s| !*s).await.is_err() {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = reader => {}
        _ = writer => {}
    }
}
