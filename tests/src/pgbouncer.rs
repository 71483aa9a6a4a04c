//! A throwaway PgBouncer in transaction pooling mode in front of a test cluster.

use crate::cluster::{free_port, tempdir};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// PgBouncer on 127.0.0.1 and a free port, `pool_mode = transaction`, trust authentication;
/// run as the `postgres` OS user when we are root (it refuses root); killed on drop.
pub struct PgBouncer {
    dir: PathBuf,
    port: u16,
    child: Child,
}

impl PgBouncer {
    /// Starts it in front of the server on 127.0.0.1:`server_port`.
    pub fn start(server_port: u16) -> PgBouncer {
        let dir = tempdir();
        let port = free_port();
        let ini = dir.join("pgbouncer.ini");
        std::fs::write(dir.join("userlist.txt"), "\"postgres\" \"\"\n").expect("userlist");
        std::fs::write(
            &ini,
            format!(
                "[databases]\n* = host=127.0.0.1 port={server_port}\n\
                 [pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {userlist}\npool_mode = transaction\n\
                 default_pool_size = 2\nmax_client_conn = 100\n\
                 logfile = {log}\npidfile = {pid}\n",
                userlist = dir.join("userlist.txt").display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .expect("ini");
        let root = rustix::process::geteuid().is_root();
        if root {
            // Written as root: let the postgres user read them.
            Command::new("chown").args(["-R", "postgres:", dir.to_str().unwrap()]).status().expect("chown");
        }
        let mut command = if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "/usr/sbin/pgbouncer"]);
            c
        } else {
            Command::new("/usr/sbin/pgbouncer")
        };
        let child = command.arg(&ini).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("pgbouncer");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "pgbouncer did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        PgBouncer { dir, port, child }
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser forwards the signal to pgbouncer.
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
