//! Real servers that speak the PROXY protocol, from their Debian packages: HAProxy
//! (`bind ... accept-proxy`) and nginx (`listen ... proxy_protocol`). Each answers an HTTP
//! request with the client address it was told, and logs it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::common::WAIT;

/// Times a server is started on a new free port when another process took the port first.
const PORT_TRIES: usize = 5;

/// `name` from the PATH or the sbin directories, or `None` after a note when it is missing
/// outside CI (on CI, where `.ci/run` installs it, a missing tool fails the test).
pub fn tool(name: &str) -> Option<PathBuf> {
    let dirs = std::env::var_os("PATH").unwrap_or_default();
    let found = std::env::split_paths(&dirs)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file());
    match found {
        Some(p) => Some(p),
        None if std::env::var_os("CI").is_some() => {
            panic!("{name} is required on CI (.ci/run installs it)")
        }
        None => {
            eprintln!("note: skipping a test that needs {name}, which is not installed");
            None
        }
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A temporary directory for a server's files, removed on drop.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "kforward-{what}-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running server: killed on drop.
pub struct Peer {
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<String>>,
    log_file: Option<PathBuf>,
    _dir: Scratch,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Peer {
    /// What the server logged so far.
    pub fn log(&self) -> String {
        let mut out = self.log.lock().expect("log").clone();
        if let Some(f) = &self.log_file {
            out.push_str(&std::fs::read_to_string(f).unwrap_or_default());
        }
        out
    }

    /// Waits until the log has a line containing `needle`.
    pub async fn logged(&self, needle: &str) -> String {
        let work = async {
            loop {
                if let Some(l) = self.log().lines().find(|l| l.contains(needle)) {
                    return l.to_string();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(WAIT, work)
            .await
            .unwrap_or_else(|_| panic!("no log line with {needle:?} in:\n{}", self.log()))
    }
}

/// Starts `program` with the config `write_config` makes for a port, on a free port, and
/// waits until it accepts connections.
async fn start(
    what: &str,
    program: &Path,
    args: impl Fn(&Path) -> Vec<String>,
    write_config: impl Fn(&Path, u16) -> Option<PathBuf>,
) -> Peer {
    for _ in 0..PORT_TRIES {
        let dir = Scratch::new(what);
        let port = free_port();
        let log_file = write_config(dir.path(), port);
        let mut child = Command::new(program)
            .args(args(dir.path()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{what} starts: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        ]
        .into_iter()
        .flatten()
        {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(out).lines();
                while let Ok(Some(l)) = lines.next_line().await {
                    let mut log = log.lock().expect("log");
                    log.push_str(&l);
                    log.push('\n');
                }
            });
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let up = async {
            loop {
                if TcpStream::connect(addr).await.is_ok() {
                    return true;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    return false;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        match tokio::time::timeout(WAIT, up).await {
            Ok(true) => {
                return Peer {
                    addr,
                    child,
                    log,
                    log_file,
                    _dir: dir,
                };
            }
            // Exited: most likely the port was taken meanwhile; try another.
            Ok(false) => eprintln!("{what} exited: {}", log.lock().expect("log")),
            Err(_) => panic!("{what} did not listen on {addr} in time"),
        }
    }
    panic!("{what} could not start on a free port");
}

/// HAProxy in HTTP mode behind `bind ... accept-proxy`: it answers `haproxy saw IP:PORT`
/// with the client its PROXY header named, and logs `client=IP:PORT` on stdout.
pub async fn haproxy(program: &Path) -> Peer {
    start(
        "haproxy",
        program,
        |dir| vec!["-db".into(), "-f".into(), dir.join("haproxy.cfg").display().to_string()],
        |dir, port| {
            let config = format!(
                "global\n\
                 \x20   log stdout format raw local0 info\n\
                 defaults\n\
                 \x20   mode http\n\
                 \x20   log global\n\
                 \x20   option dontlognull\n\
                 \x20   timeout connect 5s\n\
                 \x20   timeout client 30s\n\
                 \x20   timeout server 30s\n\
                 frontend fe\n\
                 \x20   bind 127.0.0.1:{port} accept-proxy\n\
                 \x20   log-format \"client=%ci:%cp\"\n\
                 \x20   http-request return status 200 content-type text/plain lf-string \"haproxy saw %ci:%cp\\n\"\n"
            );
            std::fs::write(dir.join("haproxy.cfg"), config).expect("haproxy.cfg");
            None
        },
    )
    .await
}

/// nginx behind `listen ... proxy_protocol`: it answers `nginx saw IP:PORT` with
/// `$proxy_protocol_addr:$proxy_protocol_port`, and logs `client=IP:PORT` to its access log.
pub async fn nginx(program: &Path) -> Peer {
    start(
        "nginx",
        program,
        |dir| {
            vec![
                "-p".into(),
                dir.display().to_string(),
                "-c".into(),
                dir.join("nginx.conf").display().to_string(),
            ]
        },
        |dir, port| {
            let d = dir.display();
            let config = format!(
                "daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{}}\n\
                 http {{\n\
                 \x20   log_format pp 'client=$proxy_protocol_addr:$proxy_protocol_port';\n\
                 \x20   access_log {d}/access.log pp;\n\
                 \x20   client_body_temp_path {d}/body;\n\
                 \x20   proxy_temp_path {d}/proxy;\n\
                 \x20   fastcgi_temp_path {d}/fastcgi;\n\
                 \x20   uwsgi_temp_path {d}/uwsgi;\n\
                 \x20   scgi_temp_path {d}/scgi;\n\
                 \x20   server {{\n\
                 \x20       listen 127.0.0.1:{port} proxy_protocol;\n\
                 \x20       location / {{ return 200 \"nginx saw $proxy_protocol_addr:$proxy_protocol_port\\n\"; }}\n\
                 \x20   }}\n\
                 }}\n"
            );
            std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
            Some(dir.join("access.log"))
        },
    )
    .await
}
