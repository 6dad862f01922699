//! `amarre adapters wit`: the WIT packages this daemon hosts, as adapters
//! build against them (docs/wit-versioning.md).

use std::path::{Path, PathBuf};

/// One hosted package version: its version, its path in the repository
/// (and under a folder the command writes to), its text.
pub struct Package {
    pub version: &'static str,
    pub path: &'static str,
    pub text: &'static str,
}

/// Every package version the host loads, oldest first.
pub const PACKAGES: &[Package] = &[
    Package {
        version: "0.1.0",
        path: "adapter.wit",
        text: include_str!("../../../../wit/adapter.wit"),
    },
    Package {
        version: "0.2.0",
        path: "0.2.0/adapter.wit",
        text: include_str!("../../../../wit/0.2.0/adapter.wit"),
    },
];

/// The package of `version`, or a message naming the hosted ones.
pub fn package(version: &str) -> Result<&'static Package, String> {
    PACKAGES
        .iter()
        .find(|p| p.version == version)
        .ok_or_else(|| {
            let known: Vec<&str> = PACKAGES.iter().map(|p| p.version).collect();
            format!(
                "no WIT package amarre:adapter@{version} here; this host has {}",
                known.join(" and ")
            )
        })
}

/// What `amarre adapters wit` prints: one package as it is, or every
/// package, each after a comment line naming it and its file.
pub fn printed(only: Option<&Package>) -> String {
    if let Some(p) = only {
        return p.text.to_owned();
    }
    let mut out = String::new();
    for (i, p) in PACKAGES.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "// ---- amarre:adapter@{} (wit/{}) ----\n",
            p.version, p.path
        ));
        out.push_str(p.text);
    }
    out
}

/// Writes into `dir`: one package to `dir/adapter.wit`, or every package
/// at its repository path (`adapter.wit`, `0.2.0/adapter.wit`; a WIT
/// folder is one package, so a toolchain pointed at `dir` reads 0.1.0 and
/// one pointed at `dir/0.2.0` reads 0.2.0). Returns the files written.
pub fn write(dir: &Path, only: Option<&Package>) -> std::io::Result<Vec<PathBuf>> {
    let files: Vec<(PathBuf, &str)> = match only {
        Some(p) => vec![(dir.join("adapter.wit"), p.text)],
        None => PACKAGES
            .iter()
            .map(|p| (dir.join(p.path), p.text))
            .collect(),
    };
    let mut written = Vec::new();
    for (file, text) in files {
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&file, text)?;
        written.push(file);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_wit(path: &str) -> String {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("wit");
        std::fs::read_to_string(root.join(path)).unwrap()
    }

    #[test]
    fn every_hosted_version_is_the_repository_file_and_declares_its_package() {
        assert_eq!(
            PACKAGES.iter().map(|p| p.version).collect::<Vec<_>>(),
            ["0.1.0", "0.2.0"]
        );
        for p in PACKAGES {
            assert_eq!(p.text, repo_wit(p.path), "{}", p.path);
            assert!(
                p.text
                    .contains(&format!("package amarre:adapter@{};", p.version)),
                "{} declares another package",
                p.path
            );
        }
    }

    #[test]
    fn printing_shows_both_versions_or_exactly_one() {
        let all = printed(None);
        let first = all
            .find("// ---- amarre:adapter@0.1.0 (wit/adapter.wit) ----\n")
            .unwrap();
        let second = all
            .find("// ---- amarre:adapter@0.2.0 (wit/0.2.0/adapter.wit) ----\n")
            .unwrap();
        assert!(first < second);
        assert!(all.contains(&repo_wit("adapter.wit")));
        assert!(all.contains(&repo_wit("0.2.0/adapter.wit")));
        for version in ["0.1.0", "0.2.0"] {
            let p = package(version).unwrap();
            assert_eq!(printed(Some(p)), p.text);
        }
        let err = package("9.0.0").err().unwrap();
        assert!(err.contains("0.1.0 and 0.2.0"), "{err}");
    }

    #[test]
    fn writing_lays_the_packages_out_as_the_repository_does() {
        let dir = std::env::temp_dir().join(format!("amarre-wit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let written = write(&dir, None).unwrap();
        assert_eq!(
            written,
            [dir.join("adapter.wit"), dir.join("0.2.0/adapter.wit")]
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("adapter.wit")).unwrap(),
            repo_wit("adapter.wit")
        );
        assert_eq!(
            std::fs::read_to_string(dir.join("0.2.0/adapter.wit")).unwrap(),
            repo_wit("0.2.0/adapter.wit")
        );
        // One version: that package alone, as DIR/adapter.wit.
        let one = dir.join("one");
        write(&one, Some(package("0.2.0").unwrap())).unwrap();
        assert_eq!(
            std::fs::read_to_string(one.join("adapter.wit")).unwrap(),
            repo_wit("0.2.0/adapter.wit")
        );
        assert!(!one.join("0.2.0").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
