//! Deployment files: the systemd unit, the example configuration and the
//! NixOS module agree with the daemon. (Nix itself is not available to run
//! the flake here; CI parse-checks every .nix file with nix-instantiate.)

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use amarre::config::file::KNOWN_KEYS;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path)
}

/// The `section.key`s the module's settings block writes.
fn module_keys() -> BTreeSet<String> {
    let text = std::fs::read_to_string(repo("server/deploy/nixos-module.nix")).unwrap();
    let begin = text
        .find("# BEGIN amarre config keys")
        .expect("BEGIN marker");
    let end = text.find("# END amarre config keys").expect("END marker");
    let mut keys = BTreeSet::new();
    let (mut depth, mut pending, mut section) = (0usize, String::new(), String::new());
    for line in text[begin..end].lines() {
        let trimmed = line.trim();
        let name = trimmed.split(" =").next().unwrap_or("").trim();
        let is_binding =
            trimmed.contains(" =") && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if depth == 1 && is_binding {
            pending = name.to_owned();
        }
        if depth == 2 {
            if is_binding {
                keys.insert(format!("{section}.{name}"));
            } else if let Some(rest) = trimmed.strip_prefix("inherit ") {
                for n in rest.trim_end_matches(';').split_whitespace() {
                    keys.insert(format!("{section}.{n}"));
                }
            }
        }
        for c in line.chars() {
            match c {
                '{' => {
                    depth += 1;
                    if depth == 2 {
                        section = pending.clone();
                    }
                }
                '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
    }
    keys
}

#[test]
fn every_setting_the_nixos_module_writes_is_a_real_configuration_key() {
    let keys = module_keys();
    assert!(keys.len() >= 12, "the parser found the settings: {keys:?}");
    for expected in [
        "server.host",
        "server.port",
        "server.max_sessions",
        "push.tokens_path",
        "push.grace_ms",
        "instances.agent",
        "instances.env",
    ] {
        assert!(keys.contains(expected), "{expected} missing from {keys:?}");
    }
    for key in &keys {
        assert!(
            KNOWN_KEYS.contains(&key.as_str()),
            "the module writes `{key}`, which the daemon does not accept"
        );
    }
}

#[test]
fn the_nixos_module_exposes_the_original_options() {
    let text = std::fs::read_to_string(repo("server/deploy/nixos-module.nix")).unwrap();
    for option in [
        "enable = lib.mkEnableOption",
        "package = ",
        "agent = ",
        "instances = ",
        "port = ",
        "host = ",
        "user = ",
        "maxSessions = ",
        "push = {",
        "tokensPath = ",
        "graceMs = ",
    ] {
        assert!(text.contains(option), "option `{option}` missing");
    }
    let flake = std::fs::read_to_string(repo("flake.nix")).unwrap();
    assert!(flake.contains("nixosModules.default") && flake.contains("nixosModules.amarre"));
}

fn directive(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= missing from the unit"))
        .to_owned()
}

fn seconds(v: &str) -> u64 {
    v.trim_end_matches('s').parse().unwrap()
}

#[test]
fn the_systemd_unit_is_notify_typed_and_stops_within_its_timeout() {
    let unit = std::fs::read_to_string(repo("server/deploy/amarre.service")).unwrap();
    assert_eq!(directive(&unit, "Type"), "notify");
    assert_eq!(directive(&unit, "KillMode"), "mixed");
    assert!(directive(&unit, "ExecStart").contains("amarre serve --config"));
    let grace_ms: u64 = directive(&unit, "Environment")
        .trim_start_matches("AMARRE_KILL_GRACE_MS=")
        .parse()
        .unwrap();
    // The daemon's own escalation (grace, then SIGKILL and a short wait)
    // fits well inside systemd's timeout.
    assert!(grace_ms / 1000 + 5 <= seconds(&directive(&unit, "TimeoutStopSec")));
    assert!(seconds(&directive(&unit, "WatchdogSec")) >= 10);
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=full",
        "CapabilityBoundingSet=",
    ] {
        assert!(unit.lines().any(|l| l == hardening), "{hardening}");
    }
    assert!(
        !unit.lines().any(
            |l| l.starts_with("ProtectHome=yes") || l.starts_with("MemoryDenyWriteExecute=yes")
        )
    );
}

#[test]
fn the_example_configuration_is_valid() {
    let out = Command::new(crate::harness::daemon_bin())
        .args(["config", "check", "--config"])
        .arg(repo("server/deploy/config.toml"))
        .env_remove("AMARRE_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("agent = \"pi\""));
}
