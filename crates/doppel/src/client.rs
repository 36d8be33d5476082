//! A small HTTP client for talking to a running doppel (queries, imports over the network).

use std::time::Duration;

use anyhow::{Context, bail};

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
