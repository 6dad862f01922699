//! Push notifications (PROTOCOL.md section 8): the token store and the Expo
//! dispatcher. The daemon is the sender; the mobile client registers its
//! Expo push token over REST.
//!
//! [`PushService::awaiting_input`] and [`PushService::crashed`] take plain
//! data (session id and name, the question) and, for questions, a callback
//! for the receipt; both return at once and send from a task of their own,
//! so a slow or dead provider never touches a session's data path. This
//! module knows nothing of sessions: `cli/serve.rs` connects the two.

pub mod store;

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::config::PushConfig;
use crate::ops::metrics::{Metrics, add};
pub use store::{PushToken, TokenStore};

/// Expo accepts at most this many messages per request.
const MAX_MESSAGES_PER_REQUEST: usize = 100;
/// The longest notification body.
const MAX_BODY_CHARS: usize = 100;
/// How long one request to the provider may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Sends Expo pushes when a session waits for its user or crashes.
pub struct PushService {
    store: TokenStore,
    http: reqwest::Client,
    url: String,
    metrics: Arc<Metrics>,
}

impl PushService {
    /// Opens the token store. `Err` (with a line for the log) disables push.
    pub fn open(config: &PushConfig, metrics: Arc<Metrics>) -> Result<Arc<PushService>, String> {
        let Some(path) = &config.tokens_path else {
            return Err("AMARRE_PUSH_TOKENS_PATH is not set".into());
        };
        let store = TokenStore::open(path, config.max_tokens)?;
        let http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("amarre/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot create the push HTTP client: {e}"))?;
        Ok(Arc::new(PushService {
            store,
            http,
            url: config.expo_url.clone(),
            metrics,
        }))
    }

    /// The token store (for the REST routes).
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// A question that expects an answer went unanswered for the grace
    /// period and nobody is at the session. `receipt` gets the number of
    /// devices reached, when there were any.
    #[allow(clippy::too_many_arguments)]
    pub fn awaiting_input(
        self: &Arc<Self>,
        session_id: &str,
        session_name: Option<&str>,
        request_id: &str,
        method: &str,
        record: &str,
        receipt: Box<dyn FnOnce(usize) + Send>,
    ) {
        let title = serde_json::from_str::<Value>(record)
            .ok()
            .and_then(|v| v["title"].as_str().map(str::to_owned))
            .unwrap_or_default();
        let body = awaiting_body(method, &title);
        let data = json!({
            "amarre": "1",
            "trigger": "awaiting_input",
            "sessionId": session_id,
            "sessionName": session_name,
            "requestId": request_id,
            "method": method,
        });
        let this = self.clone();
        let session = session_id.to_owned();
        let request_id = request_id.to_owned();
        tokio::spawn(async move {
            let ok = this.send("amarre · awaiting input", &body, data).await;
            tracing::info!(session = %session, request = %request_id, tokens = ok, "awaiting-input push sent");
            if ok > 0 {
                receipt(ok);
            }
        });
    }

    /// A session crashed (sent whatever the clients are doing).
    pub fn crashed(
        self: &Arc<Self>,
        session_id: &str,
        session_name: Option<&str>,
        code: Option<i32>,
        signal: Option<&str>,
        adapter: Option<&str>,
    ) {
        let who = session_name.unwrap_or(session_id);
        let how = match (adapter, code, signal) {
            (Some(a), _, _) => format!("its adapter {a} failed"),
            (None, Some(c), _) => format!("exited with code {c}"),
            (None, None, Some(s)) => format!("was killed by {s}"),
            (None, None, None) => "exited".to_owned(),
        };
        let body = cut(&format!("Session {who} {how}"), MAX_BODY_CHARS);
        let data = json!({
            "amarre": "1",
            "trigger": "crashed",
            "sessionId": session_id,
            "sessionName": session_name,
        });
        let this = self.clone();
        let id = session_id.to_owned();
        tokio::spawn(async move {
            let ok = this.send("amarre · session crashed", &body, data).await;
            tracing::info!(session = %id, tokens = ok, "crash push sent");
        });
    }

    /// Sends one message to every token; returns the number of ok tickets.
    /// DeviceNotRegistered tokens are removed; nothing else is.
    async fn send(&self, title: &str, body: &str, data: Value) -> usize {
        let tokens = self.store.tokens();
        let mut ok = 0;
        for chunk in tokens.chunks(MAX_MESSAGES_PER_REQUEST) {
            let messages: Vec<Value> = chunk
                .iter()
                .map(|t| json!({"to": t.token, "title": title, "body": body, "sound": "default", "data": data}))
                .collect();
            ok += self.post(chunk, &messages).await;
        }
        ok
    }

    async fn post(&self, chunk: &[PushToken], messages: &[Value]) -> usize {
        let resp = match self.http.post(&self.url).json(messages).send().await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(url = %self.url, error = %e, "push provider unreachable; nothing sent");
                add(&self.metrics.push_failed, chunk.len() as u64);
                return 0;
            }
        };
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            tracing::warn!(url = %self.url, status = status.as_u16(), "push provider refused the request; tokens kept");
            add(&self.metrics.push_failed, chunk.len() as u64);
            return 0;
        }
        let tickets = match serde_json::from_str::<Value>(&text) {
            Ok(Value::Object(o)) => match o.get("data") {
                Some(Value::Array(t)) => t.clone(),
                _ => {
                    tracing::warn!(url = %self.url, "malformed push provider answer (no data array); tokens kept");
                    add(&self.metrics.push_failed, chunk.len() as u64);
                    return 0;
                }
            },
            _ => {
                tracing::warn!(url = %self.url, "malformed push provider answer (not JSON); tokens kept");
                add(&self.metrics.push_failed, chunk.len() as u64);
                return 0;
            }
        };
        let mut ok = 0;
        let mut gone = Vec::new();
        for (token, ticket) in chunk.iter().zip(&tickets) {
            if ticket["status"] == "ok" {
                ok += 1;
                continue;
            }
            let error = ticket["details"]["error"].as_str().unwrap_or("unknown");
            if error == "DeviceNotRegistered" {
                gone.push(token.token.clone());
            } else {
                tracing::warn!(error, message = %ticket["message"], "push ticket error; token kept");
            }
        }
        add(&self.metrics.push_sent, ok as u64);
        add(
            &self.metrics.push_failed,
            (chunk.len().min(tickets.len()) - ok) as u64,
        );
        if !gone.is_empty() {
            tracing::info!(
                count = gone.len(),
                "removing push tokens of unregistered devices"
            );
            if let Err(e) = self.store.remove_all(&gone) {
                tracing::error!(error = %e, "failed to save the push token store");
            }
        }
        ok
    }
}

/// `<method>: <title>` without path-like words, at most 100 characters.
pub fn awaiting_body(method: &str, title: &str) -> String {
    let clean: Vec<&str> = title
        .split_whitespace()
        .filter(|w| !(w.contains('/') || w.contains('\\') || w.starts_with('~')))
        .collect();
    let text = if clean.is_empty() {
        method.to_owned()
    } else {
        format!("{method}: {}", clean.join(" "))
    };
    cut(&text, MAX_BODY_CHARS)
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_method_and_title_without_paths() {
        assert_eq!(awaiting_body("confirm", "Run bash?"), "confirm: Run bash?");
        assert_eq!(
            awaiting_body("confirm", "Edit /home/me/secret.txt and ~/x now"),
            "confirm: Edit and now"
        );
        assert_eq!(awaiting_body("select", ""), "select");
        let long = awaiting_body("input", &"word ".repeat(50));
        assert_eq!(long.chars().count(), 100);
        assert!(long.ends_with('…'));
    }
}
