//! A fake Expo push service on 127.0.0.1: records every request and answers
//! as the test says (ok tickets, per-token errors, an HTTP error, a
//! malformed body, slowly, or never). Runs on the test's runtime and stops
//! with it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use tokio::sync::Notify;

/// How the fake answers.
#[derive(Debug, Clone, Default)]
pub enum Mode {
    /// An ok ticket per message (except tokens listed in `errors`).
    #[default]
    Ok,
    /// The listed tokens get an error ticket with this `details.error`.
    Errors(HashMap<String, String>),
    /// Answer with this HTTP status and an error body.
    Status(u16),
    /// Answer 200 with a body that is not `{"data":[...]}`.
    Malformed,
    /// Answer ok tickets after this long.
    Slow(Duration),
    /// Never answer.
    Hang,
}

#[derive(Default)]
struct Inner {
    requests: Vec<Value>,
    answered: usize,
    mode: Mode,
}

/// A running fake push service.
pub struct FakeExpo {
    /// The URL to put in `AMARRE_PUSH_EXPO_URL`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeExpo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Shared = (Arc<Mutex<Inner>>, Arc<Notify>);

impl FakeExpo {
    pub async fn start() -> FakeExpo {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let changed = Arc::new(Notify::new());
        let app = Router::new()
            .route("/--/api/v2/push/send", post(send))
            .with_state((inner.clone(), changed.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Expo");
        let addr = listener.local_addr().expect("fake Expo address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeExpo {
            url: format!("http://{addr}/--/api/v2/push/send"),
            inner,
            changed,
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.inner.lock().unwrap().mode = mode;
    }

    /// Every request body (a JSON array of messages) so far.
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// Every message of every request so far.
    pub fn messages(&self) -> Vec<Value> {
        self.requests()
            .iter()
            .flat_map(|r| r.as_array().cloned().unwrap_or_default())
            .collect()
    }

    /// How many requests have been answered (not counting slow or hanging
    /// ones still in flight).
    pub fn answered(&self) -> usize {
        self.inner.lock().unwrap().answered
    }

    /// Waits until at least `n` requests arrived; panics naming `what`.
    pub async fn wait_requests(&self, n: usize, within: Duration, what: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.changed.notified();
            let reqs = self.requests();
            if reqs.len() >= n {
                return reqs;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "the fake Expo got {} requests, waited for {n}: {what}",
                    self.requests().len()
                );
            }
        }
    }
}

async fn send(State((inner, changed)): State<Shared>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mode = {
        let mut i = inner.lock().unwrap();
        i.requests.push(body.clone());
        i.mode.clone()
    };
    changed.notify_waiters();
    let tickets = |errors: &HashMap<String, String>| -> Value {
        let list: Vec<Value> = body
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(n, m)| match m["to"].as_str().and_then(|t| errors.get(t)) {
                Some(e) => json!({"status": "error", "message": format!("fake {e}"), "details": {"error": e}}),
                None => json!({"status": "ok", "id": format!("ticket-{n}")}),
            })
            .collect();
        json!({"data": list})
    };
    let resp = match mode {
        Mode::Ok => axum::Json(tickets(&HashMap::new())).into_response(),
        Mode::Errors(e) => axum::Json(tickets(&e)).into_response(),
        Mode::Status(code) => (
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            axum::Json(json!({"errors": [{"code": "INTERNAL", "message": "fake failure"}]})),
        )
            .into_response(),
        Mode::Malformed => "<html>not json</html>".into_response(),
        Mode::Slow(d) => {
            tokio::time::sleep(d).await;
            axum::Json(tickets(&HashMap::new())).into_response()
        }
        Mode::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
    };
    inner.lock().unwrap().answered += 1;
    changed.notify_waiters();
    resp
}
