//! The outbound webhook: every alert change POSTed as JSON (`{"type": "alert", "alert":
//! {...}}`, the event stream's form) to a URL the operator gives, in order, each retried with
//! growing waits until the receiver answers 2xx (a 4xx other than 408 and 429 is its final
//! word: logged and dropped). Runs on its own thread; never holds up the lake or the twin.

use std::sync::mpsc;
use std::time::Duration;

/// How many times a change is sent before it is given up (the waits between grow from one
/// second to a minute: about ten minutes in all).
const ATTEMPTS: usize = 15;

/// A sender of alert changes to `url`.
pub struct Webhook {
    changes: mpsc::Sender<serde_json::Value>,
}

impl Webhook {
    pub fn start(url: String) -> Webhook {
        let (changes, pending) = mpsc::channel::<serde_json::Value>();
        std::thread::Builder::new()
            .name("twin-webhook".into())
            .spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(10)))
                    .build()
                    .into();
                for body in pending {
                    deliver(&agent, &url, &body);
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
