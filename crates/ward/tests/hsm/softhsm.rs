//! A SoftHSM2 token of a test's own: a config file and token directory in
//! the test's temporary directory, found through `SOFTHSM2_CONF`, so tests
//! never share a token.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{OutputText, Pki};
use crate::harness::Ca;

/// Where Debian installs the SoftHSM2 module.
pub(crate) const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The token label and user PIN of every test token.
pub(crate) const LABEL: &str = "ward-test";
const PIN: &str = "28461937";
const SO_PIN: &str = "91735284";

/// An initialized SoftHSM2 token in a temporary directory.
pub(crate) struct SoftHsm {
    /// The config file (`SOFTHSM2_CONF`).
    pub(crate) conf: PathBuf,
    /// The directory holding the token directories.
    pub(crate) tokens: PathBuf,
    /// The file holding the user PIN.
    pub(crate) pin_file: PathBuf,
}

impl SoftHsm {
    /// Makes a token labelled [`LABEL`] under `dir`; `None` (after saying
    /// so) when SoftHSM2 is not installed.
    pub(crate) fn new(dir: &Path) -> Option<SoftHsm> {
        if !Path::new(MODULE).exists() {
            // CI installs softhsm2 (.ci/run); say so loudly when it did not.
            assert!(
                std::env::var_os("CI").is_none(),
                "{MODULE} is missing: install softhsm2"
            );
            println!("skipped: {MODULE} is missing (apt-get install softhsm2)");
            return None;
        }
        let tokens = dir.join("softhsm-tokens");
        std::fs::create_dir_all(&tokens).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap();
        let pin_file = dir.join("token.pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).unwrap();
        let hsm = SoftHsm {
            conf,
            tokens,
            pin_file,
        };
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", LABEL])
            .args(["--pin", PIN, "--so-pin", SO_PIN])
            .envs(hsm.envs().iter().map(|(k, v)| (k, v)))
            .output()
            .expect("softhsm2-util runs");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            out.stderr_text()
        );
        Some(hsm)
    }

    /// `SOFTHSM2_CONF` for every process that opens the token.
    pub(crate) fn envs(&self) -> Vec<(String, String)> {
        vec![(
            "SOFTHSM2_CONF".to_owned(),
            self.conf.to_str().unwrap().to_owned(),
        )]
    }

    /// The `ward ca init` flags that put the CA keys in this token.
    pub(crate) fn init_args(&self) -> Vec<String> {
        vec![
            "--pkcs11-module".into(),
            MODULE.into(),
            "--pkcs11-token".into(),
            LABEL.into(),
            "--pin-file".into(),
            self.pin_file.to_str().unwrap().to_owned(),
        ]
    }

    /// `pkcs11-tool --list-objects --type privkey` on the token, logged in.
    pub(crate) fn list_private_keys(&self) -> String {
        let out = Command::new("pkcs11-tool")
            .args(["--module", MODULE, "--token-label", LABEL])
            .args([
                "--login",
                "--pin",
                PIN,
                "--list-objects",
                "--type",
                "privkey",
            ])
            .envs(self.envs().iter().map(|(k, v)| (k, v)))
            .output()
            .expect("pkcs11-tool runs (Debian opensc)");
        assert!(out.status.success(), "pkcs11-tool: {}", out.stderr_text());
        out.stdout_text()
    }

    /// The one token directory SoftHSM2 made.
    pub(crate) fn token_dir(&self) -> PathBuf {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(&self.tokens)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1, "one token directory: {dirs:?}");
        dirs.remove(0)
    }
}

/// A CA on SQLite whose keys (of `key_type`) are in a fresh SoftHSM2 token,
/// with `extra` `ca init` flags; `None` when SoftHSM2 is missing.
pub(crate) fn hsm_ca(key_type: &str, extra: &[&str]) -> Option<(Ca, SoftHsm)> {
    let pki = Pki::empty();
    let hsm = SoftHsm::new(&pki.path(""))?;
    let mut init: Vec<String> = vec!["--key-type".into(), key_type.into()];
    init.extend(hsm.init_args());
    init.extend(extra.iter().map(|s| (*s).to_owned()));
    let refs: Vec<&str> = init.iter().map(String::as_str).collect();
    let ca = Ca::in_pki(pki, &refs, hsm.envs());
    Some((ca, hsm))
}
