//! `amarre token [--rotate]` and `amarre pair [--url BASE]` (PROTOCOL.md
//! 12.5): print or replace the local daemon's token, and print the web
//! client's pairing link `BASE/app/#token=<token>` with the same link as a
//! QR code drawn in the terminal. The token travels in the URL fragment,
//! which browsers never send to a server.

use std::path::PathBuf;

use clap::Args;

use super::{EXIT_CONFIG, EXIT_FAILURE};
use crate::auth::{self, AuthMode, Token};
use crate::config::{Config, Overrides};

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Configuration file (TOML) [env: AMARRE_CONFIG].
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// Write a new token atomically. A running daemon takes it within
    /// seconds: the old token then answers 401 and sockets opened with it
    /// are closed (1008 `token rotated`). Devices must be paired again.
    #[arg(long)]
    pub rotate: bool,
}

#[derive(Debug, Args)]
pub struct PairArgs {
    /// Configuration file (TOML) [env: AMARRE_CONFIG].
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
    /// The address a device reaches the daemon at, e.g.
    /// `https://box.tail1234.ts.net` behind `tailscale serve` [default:
    /// the configured bind address and port].
    #[arg(long, value_name = "BASE")]
    pub url: Option<String>,
    /// Draw the QR code dark on light (for terminals with a light
    /// background); the default suits dark backgrounds.
    #[arg(long)]
    pub invert: bool,
}

fn load(config: Option<PathBuf>) -> Result<(Config, PathBuf), i32> {
    let cfg = Config::load(&Overrides {
        config,
        ..Default::default()
    })
    .map_err(|e| {
        eprintln!("amarre: {e}");
        EXIT_CONFIG
    })?;
    let path = auth::token_file_path(&cfg).map_err(|e| {
        eprintln!("amarre: {e}");
        EXIT_CONFIG
    })?;
    Ok((cfg, path))
}

fn note_mode(cfg: &Config) {
    if cfg.auth == AuthMode::None {
        eprintln!(
            "amarre: note: AMARRE_AUTH is `none`: the daemon does not ask for this token until it runs with AMARRE_AUTH=token"
        );
    }
}

fn current(path: &std::path::Path) -> Result<Token, i32> {
    auth::load_or_create(path).map(|(t, _)| t).map_err(|e| {
        eprintln!("amarre: {e}");
        EXIT_FAILURE
    })
}

/// `amarre token [--rotate]`.
pub fn run_token(args: TokenArgs) -> i32 {
    let (cfg, path) = match load(args.config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    note_mode(&cfg);
    let token = if args.rotate {
        match auth::rotate(&path) {
            Ok(t) => {
                eprintln!(
                    "amarre: wrote a new token to {}; a running daemon takes it within seconds (pair devices again with `amarre pair`)",
                    path.display()
                );
                t
            }
            Err(e) => {
                eprintln!("amarre: {e}");
                return EXIT_FAILURE;
            }
        }
    } else {
        match current(&path) {
            Ok(t) => t,
            Err(code) => return code,
        }
    };
    println!("{}", token.expose());
    0
}

/// The web client's pairing link for `base` (an http(s) URL, possibly with
/// a path prefix): `BASE/app/#token=<token>`.
pub fn pairing_link(base: &str, token: &Token) -> Result<String, String> {
    let url = reqwest::Url::parse(base).map_err(|e| format!("--url: `{base}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("--url: `{base}` is not an http(s) URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "--url: `{base}` has a query or fragment; give the daemon's base address"
        ));
    }
    let mut base = url.as_str().trim_end_matches('/').to_owned();
    if let Some(stripped) = base.strip_suffix("/app") {
        base = stripped.to_owned();
    }
    Ok(format!("{base}/app/#token={}", token.expose()))
}

/// `link` as a QR code in terminal characters (two modules per character
/// vertically, with the quiet zone). By default light modules are drawn
/// (full blocks) so that the code reads on a dark background; `invert`
/// draws the dark modules instead.
pub fn qr_text(link: &str, invert: bool) -> Result<String, String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(link, qrcode::EcLevel::M)
        .map_err(|e| format!("cannot draw the link as a QR code: {e}"))?;
    let (dark, light) = if invert {
        (Dense1x2::Dark, Dense1x2::Light)
    } else {
        (Dense1x2::Light, Dense1x2::Dark)
    };
    Ok(code
        .render::<Dense1x2>()
        .dark_color(dark)
        .light_color(light)
        .quiet_zone(true)
        .build())
}

fn default_base(cfg: &Config) -> String {
    let host = if cfg.host.is_unspecified() {
        "127.0.0.1".to_owned()
    } else if cfg.host.is_ipv6() {
        format!("[{}]", cfg.host)
    } else {
        cfg.host.to_string()
    };
    format!("http://{host}:{}", cfg.port)
}

/// `amarre pair [--url BASE]`.
pub fn run_pair(args: PairArgs) -> i32 {
    let (cfg, path) = match load(args.config) {
        Ok(x) => x,
        Err(code) => return code,
    };
    note_mode(&cfg);
    let token = match current(&path) {
        Ok(t) => t,
        Err(code) => return code,
    };
    let base = args.url.unwrap_or_else(|| default_base(&cfg));
    let link = match pairing_link(&base, &token) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("amarre: {e}");
            return EXIT_CONFIG;
        }
    };
    let loopback = reqwest::Url::parse(&link)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .is_some_and(|h| {
            h == "localhost"
                || h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        });
    if loopback {
        eprintln!(
            "amarre: note: this link names this machine only; for a phone give --url with the address it reaches the daemon at (e.g. https://<machine>.<tailnet>.ts.net behind `tailscale serve`)"
        );
    }
    let qr = match qr_text(&link, args.invert) {
        Ok(q) => q,
        Err(e) => {
            eprintln!("amarre: {e}");
            return EXIT_FAILURE;
        }
    };
    println!("{link}");
    println!();
    println!("{qr}");
    eprintln!(
        "amarre: anyone who sees this link or code can use the daemon as you; `amarre token --rotate` revokes it"
    );
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_carries_the_token_in_the_fragment_of_the_app() {
        let t = Token::generate().unwrap();
        let want = format!("https://box.tail1.ts.net/app/#token={}", t.expose());
        for base in [
            "https://box.tail1.ts.net",
            "https://box.tail1.ts.net/",
            "https://box.tail1.ts.net/app",
            "https://box.tail1.ts.net/app/",
        ] {
            assert_eq!(pairing_link(base, &t).unwrap(), want, "{base}");
        }
        assert_eq!(
            pairing_link("http://10.0.0.2:8341/amarre/", &t).unwrap(),
            format!("http://10.0.0.2:8341/amarre/app/#token={}", t.expose())
        );
        assert!(pairing_link("ftp://x", &t).is_err());
        assert!(pairing_link("not a url", &t).is_err());
        assert!(pairing_link("https://x/?a=1", &t).is_err());
    }

    #[test]
    fn the_qr_code_is_drawn_with_blocks_and_a_quiet_zone() {
        let q = qr_text("https://x.ts.net/app/#token=abc", false).unwrap();
        let first = q.lines().next().unwrap();
        assert!(first.chars().all(|c| c == '█'), "{first:?}");
        let inv = qr_text("https://x.ts.net/app/#token=abc", true).unwrap();
        assert!(inv.lines().next().unwrap().chars().all(|c| c == ' '));
    }
}
