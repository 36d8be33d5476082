//! A small HTTP client for talking to a running doppel (queries, imports over the network),
//! and how a command finds the doppel that holds a data directory.

use std::time::Duration;

use anyhow::{Context, bail};

/// The file a serving doppel keeps in its data directory, naming the URL it answers on, so
/// that commands run beside it (`doppel query`, `import`, the model's `lake:` inputs) can ask
/// it instead of failing on the directory's lock.
pub const SERVER_FILE: &str = "SERVER.json";

/// Writes `SERVER.json` into `data` (atomically); the server removes it when it stops.
pub fn announce_server(
    data: &std::path::Path,
    address: std::net::SocketAddr,
) -> std::io::Result<()> {
    // A server listening on every address is reached on loopback from its own machine.
    let host = if address.ip().is_unspecified() {
        match address {
            std::net::SocketAddr::V4(_) => "127.0.0.1".to_string(),
            std::net::SocketAddr::V6(_) => "[::1]".to_string(),
        }
    } else {
        match address {
            std::net::SocketAddr::V4(a) => a.ip().to_string(),
            std::net::SocketAddr::V6(a) => format!("[{}]", a.ip()),
        }
    };
    let text = serde_json::json!({
        "url": format!("http://{host}:{}", address.port()),
        "pid": std::process::id(),
    });
    let tmp = data.join(format!("{SERVER_FILE}.tmp"));
    std::fs::write(&tmp, text.to_string())?;
    std::fs::rename(&tmp, data.join(SERVER_FILE))
}

/// The URL of the doppel serving `data`, if one announced itself there.
pub fn running_server(data: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(data.join(SERVER_FILE)).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    value["url"].as_str().map(str::to_owned)
}

/// The running doppel: `--url`, or the one serving the data directory; `why` says what
/// needs it when there is none.
pub fn twin_client(
    data: &crate::DataDirArg,
    server: &crate::ServerArg,
    why: &str,
) -> anyhow::Result<Client> {
    use anyhow::Context;
    let url = match &server.url {
        Some(url) => url.clone(),
        None => running_server(&data.data).with_context(|| {
            format!(
                "no doppel is serving {}: {why} (start `doppel up`, or give --url)",
                data.data.display()
            )
        })?,
    };
    Ok(Client::new(&url, server.token.clone()))
}

pub struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<String>,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(600)))
            .build()
            .into();
        Client {
            agent,
            base: base.trim_end_matches('/').to_owned(),
            token,
        }
    }

    fn auth(
        &self,
        request: ureq::RequestBuilder<ureq::typestate::WithBody>,
    ) -> ureq::RequestBuilder<ureq::typestate::WithBody> {
        match &self.token {
            Some(t) => request.header("Authorization", &format!("Token {t}")),
            None => request,
        }
    }

    /// POSTs a JSON body; returns the response body, or the server's error message.
    pub fn post_json(&self, path: &str, body: &serde_json::Value) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        let request = self
            .auth(self.agent.post(&url))
            .header("Content-Type", "application/json");
        let response = request
            .send(body.to_string())
            .with_context(|| format!("cannot reach doppel at {}", self.base))?;
        read_ok(response)
    }

    /// GETs `path` with `query` (encoded here); returns the response body, or the server's
    /// error message.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        self.call(self.agent.get(&url), query)
    }

    /// Sends a DELETE with `query` (encoded here); returns the response body, or the
    /// server's error message.
    pub fn delete(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Vec<u8>> {
        let url = format!("{}{path}", self.base);
        self.call(self.agent.delete(&url), query)
    }

    /// Sends a request without a body, with `query` and the token.
    fn call(
        &self,
        mut request: ureq::RequestBuilder<ureq::typestate::WithoutBody>,
        query: &[(&str, &str)],
    ) -> anyhow::Result<Vec<u8>> {
        for (key, value) in query {
            request = request.query(key, value);
        }
        if let Some(t) = &self.token {
            request = request.header("Authorization", &format!("Token {t}"));
        }
        let response = request
            .call()
            .with_context(|| format!("cannot reach doppel at {}", self.base))?;
        read_ok(response)
    }

    /// POSTs line protocol (gzipped) to the v2 write endpoint.
    pub fn write_lines(&self, database: &str, lines: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(lines.as_bytes())?;
        let body = gz.finish()?;
        let url = format!("{}/api/v2/write?bucket={database}&precision=ns", self.base);
        let mut delay = Duration::from_millis(200);
        for attempt in 0.. {
            let request = self
                .auth(self.agent.post(&url))
                .header("Content-Encoding", "gzip");
            let response = match request.send(&body[..]) {
                Ok(r) => r,
                // The server may be restarting: back off and try again a few times.
                Err(e) if attempt < 5 => {
                    tracing::warn!("cannot reach {} ({e}); retrying in {delay:?}", self.base);
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot reach doppel at {}", self.base));
                }
            };
            // The server is busy persisting: wait and send the same batch again.
            if response.status().as_u16() == 503 && attempt < 20 {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
            read_ok(response)?;
            return Ok(());
        }
        unreachable!("the loop returns")
    }
}

fn read_ok(mut response: ureq::http::Response<ureq::Body>) -> anyhow::Result<Vec<u8>> {
    let status = response.status();
    let mut body = Vec::new();
    std::io::copy(&mut response.body_mut().as_reader(), &mut body)?;
    if status.is_success() {
        return Ok(body);
    }
    let message = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    bail!("the server answered {status}: {message}")
}
