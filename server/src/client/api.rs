//! REST calls to a daemon (PROTOCOL.md section 3), with the token when one
//! is found, and errors a person understands.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Value, json};

use super::exit;
use super::token::{self, Token};
use crate::config::{Config, Overrides};

/// The daemon's default port (the `server.port` setting's default).
fn default_port() -> u16 {
    Config::default().port
}

/// Where the daemon is and how to prove who we are: the flags every client
/// command takes.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientOpts {
    /// The daemon's base URL, e.g. `https://host.tailnet.ts.net`
    /// [default: the local daemon of the configuration].
    #[arg(long, global = true)]
    pub url: Option<String>,
    /// A file holding the daemon's token (else `AMARRE_TOKEN`, else the
    /// local daemon's token file). Never give the token itself as an argument.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The configuration file of the local daemon [env: AMARRE_CONFIG].
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,
}

/// A failure of a client command, with its exit code.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientError {
    /// Usage or configuration (exit 2).
    Usage(String),
    /// The daemon could not be reached (exit 4).
    Unreachable { url: String, detail: String },
    /// No session with that id or name (exit 5).
    NotFound(String),
    /// A name that matches several sessions (exit 5).
    Ambiguous { name: String, matches: Vec<Value> },
    /// 401 (exit 6).
    Unauthorized { had_token: Option<String> },
    /// Anything else (exit 1).
    Failure(String),
}

impl ClientError {
    pub fn code(&self) -> i32 {
        match self {
            ClientError::Usage(_) => exit::USAGE,
            ClientError::Unreachable { .. } => exit::UNREACHABLE,
            ClientError::NotFound(_) | ClientError::Ambiguous { .. } => exit::NOT_FOUND,
            ClientError::Unauthorized { .. } => exit::UNAUTHORIZED,
            ClientError::Failure(_) => exit::FAILURE,
        }
    }

    /// Prints the error on stderr and returns its exit code.
    pub fn report(&self) -> i32 {
        eprintln!("amarre: {self}");
        self.code()
    }
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Usage(m) | ClientError::Failure(m) => f.write_str(m),
            ClientError::Unreachable { url, detail } => write!(
                f,
                "the daemon at {url} is not reachable ({detail}); is it running (`amarre serve`)? \
                 Give another one with --url"
            ),
            ClientError::NotFound(what) => write!(f, "{what}"),
            ClientError::Ambiguous { name, matches } => {
                write!(f, "the name `{name}` matches {} sessions; give one of their ids:", matches.len())?;
                for s in matches {
                    write!(
                        f,
                        "\n  {}  {}  {}",
                        s["id"].as_str().unwrap_or("?"),
                        s["status"].as_str().unwrap_or("?"),
                        s["cwd"].as_str().unwrap_or("")
                    )?;
                }
                Ok(())
            }
            ClientError::Unauthorized { had_token: None } => f.write_str(
                "unauthorized: the daemon requires a token and none was found; give \
                 --token-file FILE or set AMARRE_TOKEN (`amarre token` prints it on the daemon's machine)",
            ),
            ClientError::Unauthorized {
                had_token: Some(from),
            } => write!(
                f,
                "unauthorized: the daemon refused the token from {from} (rotated? `amarre token` prints the current one)"
            ),
        }
    }
}

/// A client of one daemon.
#[derive(Debug, Clone)]
pub struct Api {
    /// `http(s)://host[:port]`, no trailing slash.
    pub base: String,
    pub token: Option<Token>,
    http: reqwest::Client,
}

fn loopback_host(base: &str) -> bool {
    let rest = base
        .trim_start_matches("http://")
        .trim_start_matches("https://");
    let host_port = rest.split('/').next().unwrap_or("");
    let host = if let Some(inner) = host_port.strip_prefix('[') {
        inner.split(']').next().unwrap_or("")
    } else {
        host_port.split(':').next().unwrap_or("")
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Normalises a `--url`: `http(s)://...` as given (without a trailing
/// slash), `ws(s)://` turned into `http(s)://`, a bare `host:port` as http.
pub fn normalize_url(url: &str) -> Result<String, ClientError> {
    let url = url.trim().trim_end_matches('/');
    let out = if let Some(r) = url.strip_prefix("ws://") {
        format!("http://{r}")
    } else if let Some(r) = url.strip_prefix("wss://") {
        format!("https://{r}")
    } else if url.starts_with("http://") || url.starts_with("https://") {
        url.to_owned()
    } else if url.contains("://") {
        return Err(ClientError::Usage(format!(
            "--url {url}: only http://, https://, ws:// and wss:// URLs are understood"
        )));
    } else if url.is_empty() {
        return Err(ClientError::Usage("--url is empty".into()));
    } else {
        format!("http://{url}")
    };
    Ok(out)
}

/// The local daemon's base URL and configuration file, from the same
/// configuration `amarre serve` reads (flags aside): a wildcard bind is
/// reached on loopback. An unreadable configuration falls back to the
/// default address.
fn local_daemon(config: Option<PathBuf>) -> (String, Option<PathBuf>) {
    let overrides = Overrides {
        config: config.clone(),
        ..Default::default()
    };
    match Config::load(&overrides) {
        Ok(cfg) => {
            let host = match cfg.host {
                ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_owned(),
                ip if ip.is_unspecified() => "[::1]".to_owned(),
                std::net::IpAddr::V6(v6) => format!("[{v6}]"),
                ip => ip.to_string(),
            };
            let port = if cfg.port == 0 {
                default_port()
            } else {
                cfg.port
            };
            (format!("http://{host}:{port}"), cfg.config_file)
        }
        Err(_) => (
            format!("http://127.0.0.1:{}", default_port()),
            config.or_else(|| std::env::var_os("AMARRE_CONFIG").map(PathBuf::from)),
        ),
    }
}

impl Api {
    /// The daemon of `--url` (else the local one) and its token.
    pub fn new(opts: &ClientOpts) -> Result<Api, ClientError> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let (base, config_file, local) = match &opts.url {
            Some(u) => {
                let base = normalize_url(u)?;
                let local = loopback_host(&base);
                (base, opts.config.clone(), local)
            }
            None => {
                let (base, file) = local_daemon(opts.config.clone());
                (base, file, true)
            }
        };
        // The local daemon's token file, where the daemon itself puts it.
        let local_file = if local {
            let overrides = Overrides {
                config: config_file.clone(),
                ..Default::default()
            };
            Config::load(&overrides)
                .ok()
                .and_then(|cfg| crate::auth::token_file_path_in(&cfg, &env).ok())
        } else {
            None
        };
        let token = token::find(opts.token_file.as_deref(), &env, local_file.as_deref())
            .map_err(ClientError::Usage)?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Failure(format!("cannot build an HTTP client: {e}")))?;
        Ok(Api { base, token, http })
    }

    /// For tests and callers that know the URL and token already.
    pub fn with(base: &str, token: Option<Token>) -> Result<Api, ClientError> {
        Ok(Api {
            base: normalize_url(base)?,
            token,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .map_err(|e| ClientError::Failure(format!("cannot build an HTTP client: {e}")))?,
        })
    }

    fn unauthorized(&self) -> ClientError {
        ClientError::Unauthorized {
            had_token: self.token.as_ref().map(|t| t.source.to_string()),
        }
    }

    /// Sends a request; 401 and connection failures become their errors.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), ClientError> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(&t.value);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ClientError::Unreachable {
            url: self.base.clone(),
            detail: error_chain(&e),
        })?;
        let status = resp.status().as_u16();
        if status == 401 {
            return Err(self.unauthorized());
        }
        let text = resp.text().await.unwrap_or_default();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Every session (`GET /sessions`).
    pub async fn sessions(&self) -> Result<Vec<Value>, ClientError> {
        let (st, body) = self.call(reqwest::Method::GET, "/sessions", None).await?;
        match (st, body) {
            (200, Value::Array(list)) => Ok(list),
            (st, body) => Err(unexpected("GET /sessions", st, &body)),
        }
    }

    /// The session whose id is `key`, else the one named `key`.
    pub async fn resolve(&self, key: &str) -> Result<Value, ClientError> {
        let list = self.sessions().await?;
        if let Some(s) = list.iter().find(|s| s["id"] == key) {
            return Ok(s.clone());
        }
        let named: Vec<Value> = list.into_iter().filter(|s| s["name"] == key).collect();
        match named.len() {
            0 => Err(ClientError::NotFound(format!(
                "no session has the id or name `{key}` (`amarre sessions` lists them)"
            ))),
            1 => Ok(named.into_iter().next().unwrap_or_default()),
            _ => Err(ClientError::Ambiguous {
                name: key.to_owned(),
                matches: named,
            }),
        }
    }

    /// One session's summary.
    pub async fn session(&self, id: &str) -> Result<Value, ClientError> {
        let (st, body) = self
            .call(reqwest::Method::GET, &format!("/sessions/{id}"), None)
            .await?;
        match st {
            200 => Ok(body),
            404 => Err(ClientError::NotFound(format!(
                "the session {id} no longer exists"
            ))),
            _ => Err(unexpected("GET /sessions/{id}", st, &body)),
        }
    }

    /// `POST /sessions`: the one implementation behind `amarre new` and
    /// `amarre sessions new`.
    pub async fn create_session(&self, req: &NewSession) -> Result<Value, ClientError> {
        let mut body = json!({"env": req.env});
        if let Some(i) = &req.instance {
            body["instanceId"] = i.clone().into();
        }
        if let Some(n) = &req.name {
            body["name"] = n.clone().into();
        }
        if let Some(c) = &req.cwd {
            body["cwd"] = c.clone().into();
        }
        let (st, resp) = self
            .call(reqwest::Method::POST, "/sessions", Some(&body))
            .await?;
        match (st, resp["error"].as_str()) {
            (201, _) => Ok(resp),
            (404, Some("unknown_instance")) => Err(ClientError::NotFound(format!(
                "the daemon has no instance `{}` (`amarre adapters` lists them)",
                resp["instanceId"].as_str().unwrap_or("?")
            ))),
            (429, _) => Err(ClientError::Failure(format!(
                "the daemon already runs its maximum of {} sessions",
                resp["limit"]
            ))),
            (422, Some("spawn_failed")) => Err(ClientError::Failure(format!(
                "the agent could not be started ({}): {}",
                resp["reason"].as_str().unwrap_or("?"),
                resp["detail"].as_str().unwrap_or("")
            ))),
            _ => Err(unexpected("POST /sessions", st, &resp)),
        }
    }

    /// `DELETE /sessions/{id}`.
    pub async fn delete_session(&self, id: &str) -> Result<(), ClientError> {
        let (st, body) = self
            .call(reqwest::Method::DELETE, &format!("/sessions/{id}"), None)
            .await?;
        match st {
            204 => Ok(()),
            404 => Err(ClientError::NotFound(format!(
                "no session has the id `{id}` (not_found)"
            ))),
            _ => Err(unexpected("DELETE /sessions/{id}", st, &body)),
        }
    }

    /// `POST /sessions/{id}/restart`.
    pub async fn restart_session(&self, id: &str) -> Result<Value, ClientError> {
        let (st, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/sessions/{id}/restart"),
                None,
            )
            .await?;
        match (st, body["error"].as_str()) {
            (200, _) => Ok(body),
            (404, _) => Err(ClientError::NotFound(format!(
                "no session has the id `{id}` (not_found)"
            ))),
            (409, _) => Err(ClientError::Failure(format!(
                "the session {id} is already running (already_running)"
            ))),
            (410, _) => Err(ClientError::Failure(format!(
                "the instance `{}` of session {id} no longer exists",
                body["instanceId"].as_str().unwrap_or("?")
            ))),
            (422, Some("spawn_failed")) => Err(ClientError::Failure(format!(
                "the agent could not be started ({}): {}",
                body["reason"].as_str().unwrap_or("?"),
                body["detail"].as_str().unwrap_or("")
            ))),
            _ => Err(unexpected("POST /sessions/{id}/restart", st, &body)),
        }
    }

    /// The WebSocket URL of a session's data plane with `query` (which
    /// starts with `?` or is empty).
    pub fn ws_url(&self, id: &str, query: &str) -> String {
        let base = if let Some(r) = self.base.strip_prefix("https://") {
            format!("wss://{r}")
        } else if let Some(r) = self.base.strip_prefix("http://") {
            format!("ws://{r}")
        } else {
            self.base.clone()
        };
        format!("{base}/sessions/{id}{query}")
    }

    /// The value of an `Authorization` header, when there is a token.
    pub fn authorization(&self) -> Option<String> {
        self.token.as_ref().map(|t| format!("Bearer {}", t.value))
    }

    pub fn unauthorized_error(&self) -> ClientError {
        self.unauthorized()
    }
}

/// What `amarre new` and `amarre sessions new` ask for.
#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub instance: Option<String>,
    pub name: Option<String>,
    pub cwd: Option<String>,
    pub env: serde_json::Map<String, Value>,
}

fn unexpected(what: &str, status: u16, body: &Value) -> ClientError {
    ClientError::Failure(format!("{what}: the daemon answered {status}: {body}"))
}

/// An error and its causes on one line (reqwest hides the useful part,
/// e.g. "Connection refused", in a source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_normalised() {
        assert_eq!(
            normalize_url("https://h.ts.net/").unwrap(),
            "https://h.ts.net"
        );
        assert_eq!(normalize_url("wss://h.ts.net").unwrap(), "https://h.ts.net");
        assert_eq!(
            normalize_url("127.0.0.1:8341").unwrap(),
            "http://127.0.0.1:8341"
        );
        assert!(matches!(
            normalize_url("ftp://x"),
            Err(ClientError::Usage(_))
        ));
        let api = Api::with("https://h.ts.net", None).unwrap();
        assert_eq!(
            api.ws_url("abc", "?seq=1"),
            "wss://h.ts.net/sessions/abc?seq=1"
        );
    }

    #[test]
    fn only_loopback_urls_count_as_the_local_daemon() {
        assert!(loopback_host("http://127.0.0.1:8341"));
        assert!(loopback_host("http://localhost:1"));
        assert!(loopback_host("http://[::1]:8341"));
        assert!(!loopback_host("https://host.tailnet.ts.net"));
        assert!(!loopback_host("http://100.64.0.1:8341"));
    }

    #[test]
    fn an_ambiguous_name_lists_the_sessions() {
        let e = ClientError::Ambiguous {
            name: "work".into(),
            matches: vec![
                json!({"id": "aaa", "status": "running"}),
                json!({"id": "bbb", "status": "crashed"}),
            ],
        };
        let text = e.to_string();
        assert!(
            text.contains("aaa") && text.contains("bbb") && text.contains("matches 2"),
            "{text}"
        );
        assert_eq!(e.code(), exit::NOT_FOUND);
    }
}
