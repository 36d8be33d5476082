//! The outbound webhook: every alert change POSTed as JSON (`{"type": "alert", "alert":
//! {...}}`, the event stream's form) to a URL the operator gives, in order, each retried with
//! growing waits until the receiver answers 2xx (a 4xx other than 408 and 429 is its final
//! word: logged and dropped). Runs on its own thread; never holds up the lake or the twin.
//! https is checked against Mozilla's public roots, or against the operator's own
//! certificates (an internal CA); never sent unverified.

use std::sync::mpsc;
use std::time::Duration;

use crate::twin::TwinError;

/// How many times a change is sent before it is given up (the waits between grow from one
/// second to a minute: about ten minutes in all).
const ATTEMPTS: usize = 15;

/// Where alert changes go: an http:// or https:// URL, and the certificates an https
/// receiver must prove itself with.
#[derive(Debug, Clone)]
pub struct WebhookTarget {
    url: String,
    tls: ureq::tls::TlsConfig,
}

impl WebhookTarget {
    /// `url` must be http:// or https:// with a host. `ca_pem`: PEM certificates to trust for
    /// https instead of the public roots (a receiver behind an internal CA); `None`: Mozilla's
    /// roots, built in.
    pub fn new(url: &str, ca_pem: Option<&[u8]>) -> Result<WebhookTarget, TwinError> {
        let invalid = |why: &str| TwinError::Invalid(format!("webhook `{url}`: {why}"));
        let uri: ureq::http::Uri = url
            .parse()
            .map_err(|e| invalid(&format!("not a URL ({e})")))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(invalid("expected a URL starting http:// or https://")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(invalid("the URL names no host"));
        }
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(pem) = ca_pem {
            let mut roots = Vec::new();
            for item in ureq::tls::parse_pem(pem) {
                match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => roots.push(cert),
                    Ok(_) => {}
                    Err(e) => return Err(invalid(&format!("its CA file is not PEM: {e}"))),
                }
            }
            if roots.is_empty() {
                return Err(invalid("its CA file holds no certificate"));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        Ok(WebhookTarget {
            url: url.to_string(),
            tls: tls.build(),
        })
    }
}

/// A sender of alert changes to a [`WebhookTarget`].
pub struct Webhook {
    changes: mpsc::Sender<serde_json::Value>,
}

impl Webhook {
    pub fn start(target: WebhookTarget) -> Webhook {
        let (changes, pending) = mpsc::channel::<serde_json::Value>();
        std::thread::Builder::new()
            .name("twin-webhook".into())
            .spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .tls_config(target.tls)
                    .build()
                    .into();
                for body in pending {
                    deliver(&agent, &target.url, &body);
                }
            })
            .expect("a thread for the webhook");
        Webhook { changes }
    }

    /// Queues a change; sent after those queued before it.
    pub fn send(&self, body: serde_json::Value) {
        let _ = self.changes.send(body);
    }
}

fn deliver(agent: &ureq::Agent, url: &str, body: &serde_json::Value) {
    let mut wait = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        let answer = agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body.to_string());
        match answer {
            Ok(r) if r.status().is_success() => return,
            Ok(r) if r.status().is_client_error() && ![408, 429].contains(&r.status().as_u16()) => {
                tracing::warn!(url, status = %r.status(), "the webhook refused an alert; not sent again");
                return;
            }
            Ok(r) => {
                tracing::warn!(url, status = %r.status(), attempt, "the webhook failed; retrying")
            }
            Err(e) => {
                tracing::warn!(url, error = %e, attempt, "the webhook is unreachable; retrying")
            }
        }
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(60));
    }
    tracing::error!(
        url,
        "an alert could not be delivered to the webhook after {ATTEMPTS} attempts"
    );
}
