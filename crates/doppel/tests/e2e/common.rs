//! Starting and talking to a real `doppel serve` process.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn doppel() -> Command {
    Command::new(env!("CARGO_BIN_EXE_doppel"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server; killed when dropped.
pub struct Server {
    pub child: Child,
    pub url: String,
    pub port: u16,
}

impl Server {
    pub fn start(data: &Path, extra: &[&str]) -> Server {
        Self::start_free("serve", data, extra)
    }

    /// `doppel up` (the server with the reference plant as its data source).
    pub fn up(data: &Path, extra: &[&str]) -> Server {
        Self::start_free("up", data, extra)
    }

    /// On a free port. Another test's server may take the port between `free_port` and the
    /// bind; then ours exits, and it is started again on another port.
    fn start_free(command: &str, data: &Path, extra: &[&str]) -> Server {
        let mut last = String::new();
        for _ in 0..5 {
            match Self::start_command(command, data, free_port(), extra) {
                Ok(server) => return server,
                Err(e) => last = e,
            }
        }
        panic!("{last}");
    }

    fn start_command(
        command: &str,
        data: &Path,
        port: u16,
        extra: &[&str],
    ) -> Result<Server, String> {
        let listen = format!("127.0.0.1:{port}");
        let child = doppel()
            .args([
                command,
                "--data",
                data.to_str().unwrap(),
                "--listen",
                &listen,
            ])
            .args(extra)
            .env("DOPPEL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("doppel starts");
        let mut server = Server {
            child,
            url: format!("http://{listen}"),
            port,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Until the port answers and our process is still the one serving it (a connection to
    /// another test's server on the same port would pass the first check alone).
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                let mut stderr = String::new();
                self.child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut stderr)
                    .unwrap();
                return Err(format!(
                    "doppel exited with {status} before serving: {stderr}"
                ));
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                std::thread::sleep(Duration::from_millis(200));
                if matches!(self.child.try_wait(), Ok(None)) {
                    return Ok(());
                }
                continue; // ours exited: the loop above says why
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err("doppel did not start listening within 60 s".into())
    }

    /// SIGTERM, then wait: a graceful stop that persists.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        std::mem::forget(self);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

pub struct Reply {
    pub status: u16,
    pub body: String,
    pub headers: ureq::http::HeaderMap,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn reply(result: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
    let mut response = result.expect("the request reaches the server");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_string()
        .unwrap();
    Reply {
        status,
        body,
        headers,
    }
}

pub fn post(url: &str, headers: &[(&str, &str)], body: impl AsRef<[u8]>) -> Reply {
    let mut request = agent().post(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    reply(request.send(body.as_ref()))
}

pub fn get(url: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = agent().get(url);
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    reply(request.call())
}

/// Runs SQL through the HTTP API and returns the JSON rows.
pub fn sql(server: &Server, db: &str, q: &str) -> Vec<serde_json::Value> {
    let body = serde_json::json!({"db": db, "q": q, "format": "json"}).to_string();
    let r = post(
        &format!("{}/api/v3/query_sql", server.url),
        &[("Content-Type", "application/json")],
        body,
    );
    assert_eq!(r.status, 200, "{q}: {}", r.body);
    r.json().as_array().unwrap().clone()
}

/// This crate's folder, read when the test runs: cargo sets it for every test process. The
/// compile-time `env!` value would be wrong when a build cache made in another checkout is
/// reused (cargo does not rebuild a workspace member for a new absolute path), and the tests
/// that look for `../shared/data` would then skip silently.
pub fn manifest_dir() -> PathBuf {
    PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("tests run under cargo"))
}

/// Where the shared data sets are. They sit beside every clone, CI's included, so a missing
/// set fails the test that needs it, saying what is missing: never a silent pass.
pub fn shared_data() -> PathBuf {
    let dir = manifest_dir().join("../../../shared/data");
    assert!(
        dir.join("ett/ETTh1.csv").exists() && dir.join("tep/d00.dat").exists(),
        "{} is missing the ETT and Tennessee Eastman files this test needs",
        dir.display()
    );
    dir
}
