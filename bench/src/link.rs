//! A loopback TCP link that delays every chunk by a fixed time in each direction, with
//! microsecond precision: the "database on another host" of scenario 1.
//!
//! `crate::proxy` delays on tokio's timer, which rounds every sleep up to whole milliseconds: a
//! 0.5 ms delay becomes 1 to 2 ms each way, which would make every round trip (and so the
//! reference's three) look several times dearer than the link asked for. Here each direction of
//! each connection is a reader thread and a writer thread joined by a channel; the writer sleeps
//! until each chunk is due with the thread's timer slack set to 1 µs, so pipelined chunks stay
//! pipelined and each is held for the delay.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A running link; stops accepting when dropped (open connections end with their peers).
#[derive(Debug)]
pub struct DelayLink {
    addr: SocketAddr,
    stopped: Arc<AtomicBool>,
}

impl DelayLink {
    /// Listens on a free port of 127.0.0.1 and forwards to `target`, holding every chunk for
    /// `delay` in each direction.
    ///
    /// # Errors
    /// The listener could not be bound.
    pub fn start(target: SocketAddr, delay: Duration) -> std::io::Result<DelayLink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let stopped = Arc::new(AtomicBool::new(false));
        let stop_flag = stopped.clone();
        std::thread::Builder::new().name("delay-link-accept".into()).spawn(move || {
            for client in listener.incoming() {
                if stop_flag.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(target) else { continue };
                if let Err(e) = relay(client, server, delay) {
                    tracing::warn!(error = %e, "delay link: could not start a relay");
                }
            }
        })?;
        Ok(DelayLink { addr, stopped })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

impl Drop for DelayLink {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn relay(client: TcpStream, server: TcpStream, delay: Duration) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    pipe(client.try_clone()?, server.try_clone()?, delay)?;
    pipe(server, client, delay)
}

/// Forwards `from` to `to` through a delay line: two threads, ended by either side closing.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) -> std::io::Result<()> {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::Builder::new().name("delay-link-read".into()).spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    })?;
    std::thread::Builder::new().name("delay-link-write".into()).spawn(move || {
        // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's timer slack (ns); the
        // default 50 µs would add up to a tenth of the delay to every chunk.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };
        while let Ok((due, chunk)) = rx.recv() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    })?;
    Ok(())
}
