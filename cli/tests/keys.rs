//! `edgefleet keys` through the real binary: the files it writes are a signing key and a trust
//! bundle that verify each other, through a rotation and a retirement, and what it refuses.

mod support;

use std::fs;
use std::path::Path;

use edgefleet_protocol::signing::{KeyId, SignatureError, SignedKind, SigningKey, TrustAnchor};
use serde::{Deserialize, Serialize};
use support::edgefleet;

/// A document to sign (the real ones are assignments; the envelope is the same).
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Note {
    text: String,
}

impl SignedKind for Note {
    const KIND: &'static str = "cli-test-note";
    const MAX_PAYLOAD_LEN: usize = 1024;
}

fn note() -> Note {
    Note {
        text: "valve 3 open".into(),
    }
}

fn signing_key(dir: &Path) -> SigningKey {
    SigningKey::load(&dir.join("signing-key.pem")).unwrap()
}

fn trust(dir: &Path) -> TrustAnchor {
    TrustAnchor::load(&dir.join("trust.pem")).unwrap()
}

fn mode(path: &Path) -> u32 {
    std::os::unix::fs::PermissionsExt::mode(&fs::metadata(path).unwrap().permissions()) & 0o777
}

#[test]
fn generate_writes_a_key_its_bundle_trusts_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let run = edgefleet(tmp.path(), &["keys", "generate", "--out", "keys"]).ok();
    let dir = tmp.path().join("keys");
    let key = signing_key(&dir);
    assert!(
        run.stdout
            .starts_with(&format!("Generated signing key {}\n", key.key_id())),
        "{}",
        run.stdout
    );
    assert_eq!(mode(&dir.join("signing-key.pem")), 0o600);
    assert_eq!(mode(&dir), 0o700);
    let anchor = trust(&dir);
    assert_eq!(anchor.key_ids().collect::<Vec<_>>(), [key.key_id()]);
    assert_eq!(key.sign(&note()).verify(&anchor), Ok(note()));

    // A second generate refuses, says what to do instead, and changes nothing.
    let bundle = fs::read(dir.join("trust.pem")).unwrap();
    let run = edgefleet(tmp.path(), &["keys", "generate", "--out", "keys"]).fails(1);
    assert!(run.stderr.contains("exists already"), "{}", run.stderr);
    assert!(
        run.stderr.contains("keys rotate --dir keys"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    assert_eq!(signing_key(&dir).key_id(), key.key_id());
    assert_eq!(fs::read(dir.join("trust.pem")).unwrap(), bundle);

    // A trust bundle alone is not overwritten either.
    fs::remove_file(dir.join("signing-key.pem")).unwrap();
    let run = edgefleet(tmp.path(), &["keys", "generate", "--out", "keys"]).fails(1);
    assert!(
        run.stderr.contains("trust.pem exists already"),
        "{}",
        run.stderr
    );

    // --force starts over: a new key, trusted alone.
    edgefleet(
        tmp.path(),
        &["keys", "generate", "--out", "keys", "--force"],
    )
    .ok();
    let fresh = signing_key(&dir);
    assert_ne!(fresh.key_id(), key.key_id());
    assert_eq!(trust(&dir).key_ids().collect::<Vec<_>>(), [fresh.key_id()]);
}

#[test]
fn rotate_then_retire() {
    let tmp = tempfile::tempdir().unwrap();
    edgefleet(tmp.path(), &["keys", "generate", "--out", "keys"]).ok();
    let dir = tmp.path().join("keys");
    let old = signing_key(&dir);
    let signed_by_old = old.sign(&note());

    let run = edgefleet(tmp.path(), &["keys", "rotate", "--dir", "keys"]).ok();
    let new = signing_key(&dir);
    assert_ne!(new.key_id(), old.key_id());
    // The old key is kept, readable by its owner only.
    let archive = dir.join(format!("signing-key.{}.pem", old.key_id()));
    assert_eq!(SigningKey::load(&archive).unwrap().key_id(), old.key_id());
    assert_eq!(mode(&archive), 0o600);
    assert_eq!(mode(&dir.join("signing-key.pem")), 0o600);
    // Both are trusted: agents with the new bundle accept what either signs.
    let anchor = trust(&dir);
    assert_eq!(anchor.len(), 2);
    assert_eq!(new.sign(&note()).verify(&anchor), Ok(note()));
    assert_eq!(signed_by_old.verify(&anchor), Ok(note()));
    // The procedure, with the command that ends it.
    for step in [
        "1. Roll out the new trust bundle",
        "2. Restart the controller on the new key",
        "3. Once every node reports the new assignment generation",
        &format!("edgefleet keys retire --dir keys --key {}", old.key_id()),
    ] {
        assert!(run.stdout.contains(step), "{step:?} in\n{}", run.stdout);
    }

    // The listing names each key and file.
    let listed = edgefleet(tmp.path(), &["keys", "list", "--dir", "keys", "-o", "json"]).ok();
    let rows: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let rows: Vec<(String, String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let field = |name: &str| row[name].as_str().unwrap().to_owned();
            (field("key_id"), field("role"), field("file"))
        })
        .collect();
    let (old_id, new_id) = (old.key_id().to_string(), new.key_id().to_string());
    let mut trusted = [old_id.clone(), new_id.clone()];
    trusted.sort();
    assert_eq!(
        rows,
        [
            (
                new_id.clone(),
                "signing".into(),
                "keys/signing-key.pem".into()
            ),
            (
                trusted[0].clone(),
                "trusted".into(),
                "keys/trust.pem".into()
            ),
            (
                trusted[1].clone(),
                "trusted".into(),
                "keys/trust.pem".into()
            ),
            (
                old_id.clone(),
                "archived".into(),
                format!("keys/signing-key.{old_id}.pem")
            ),
        ]
    );
    let table = edgefleet(tmp.path(), &["keys", "list", "--dir", "keys"]).ok();
    assert!(
        table
            .stdout
            .starts_with("KEY ID            ROLE      FILE\n"),
        "{}",
        table.stdout
    );
    let yaml = edgefleet(tmp.path(), &["keys", "list", "--dir", "keys", "-o", "yaml"]).ok();
    assert!(yaml.stdout.contains("role: archived"), "{}", yaml.stdout);

    // Retiring the current key or an unknown one is refused.
    let run = edgefleet(
        tmp.path(),
        &["keys", "retire", "--dir", "keys", "--key", &new_id],
    )
    .fails(1);
    assert!(run.stderr.contains("current signing key"), "{}", run.stderr);
    let run = edgefleet(
        tmp.path(),
        &[
            "keys",
            "retire",
            "--dir",
            "keys",
            "--key",
            "0123456789abcdef",
        ],
    )
    .fails(1);
    assert!(
        run.stderr.contains("does not trust key 0123456789abcdef"),
        "{}",
        run.stderr
    );
    let run = edgefleet(
        tmp.path(),
        &["keys", "retire", "--dir", "keys", "--key", "nope"],
    )
    .fails(2);
    assert!(
        run.stderr.contains("16 lowercase hex digits"),
        "{}",
        run.stderr
    );
    assert_eq!(trust(&dir).len(), 2);

    // Retiring the old key: what it signed is no longer trusted, the new key still is.
    let run = edgefleet(
        tmp.path(),
        &["keys", "retire", "--dir", "keys", "--key", &old_id],
    )
    .ok();
    assert!(
        run.stdout.contains(&format!("now trusts {new_id}")),
        "{}",
        run.stdout
    );
    let anchor = trust(&dir);
    assert_eq!(anchor.key_ids().collect::<Vec<KeyId>>(), [new.key_id()]);
    assert_eq!(
        signed_by_old.verify(&anchor),
        Err(SignatureError::UnknownKey(old.key_id()))
    );
    assert_eq!(new.sign(&note()).verify(&anchor), Ok(note()));
}

#[test]
fn rotate_without_a_key_says_how_to_make_one() {
    let tmp = tempfile::tempdir().unwrap();
    let run = edgefleet(tmp.path(), &["keys", "rotate", "--dir", "empty"]).fails(1);
    assert!(
        run.stderr.contains(
            "holds no signing-key.pem: make one with `edgefleet keys generate --out empty`"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn help_teaches_and_the_kubectl_plugin_is_named_so() {
    let tmp = tempfile::tempdir().unwrap();
    let help = edgefleet(tmp.path(), &["keys", "rotate", "--help"]).ok();
    assert!(
        help.stdout.contains("Usage: edgefleet keys rotate"),
        "{}",
        help.stdout
    );
    assert!(
        help.stdout
            .contains("Examples:\n  edgefleet keys rotate --dir ./keys"),
        "{}",
        help.stdout
    );

    // Usage errors exit with 2.
    edgefleet(tmp.path(), &["keys", "generate"]).fails(2);
    edgefleet(tmp.path(), &["frobnicate"]).fails(2);

    // Run under the plugin's name, the help speaks of `kubectl edgefleet`.
    let plugin = tmp.path().join("kubectl-edgefleet");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_edgefleet"), &plugin).unwrap();
    let output = std::process::Command::new(&plugin)
        .args(["keys", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(
        help.contains("Usage: kubectl edgefleet keys <COMMAND>"),
        "{help}"
    );
    assert!(
        help.contains("  kubectl edgefleet keys generate --out ./keys"),
        "{help}"
    );
    let output = std::process::Command::new(&plugin)
        .args([
            "keys",
            "rotate",
            "--dir",
            tmp.path().join("none").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.starts_with("kubectl edgefleet: error:"), "{stderr}");
    assert!(
        stderr.contains("`kubectl edgefleet keys generate"),
        "{stderr}"
    );
}
