//! `edgefleet keys`: the controller's ed25519 signing key and the agents' trust bundle, in one
//! folder.
//!
//! | file | what | who takes it |
//! |---|---|---|
//! | `signing-key.pem` | the signing key (PKCS#8 PEM, mode 0600) | the controller's `--signing-key` |
//! | `trust.pem` | the trust bundle: the public keys agents accept (SPKI PEM blocks, `# key <id>` comments) | every agent's `--trust-anchor` |
//! | `signing-key.<id>.pem` | a previous signing key, kept by `rotate` (mode 0600) | nobody; delete it once retired |
//!
//! Rotation without downtime: `rotate` makes a new signing key and a bundle trusting old and new;
//! the operator rolls the bundle out to every agent, then points the controller at the new key (it
//! re-signs every assignment); once every node reports the new generation, `retire` drops the old
//! key from the bundle.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use edgefleet_protocol::signing::{KeyId, SigningKey, TrustAnchor};
use serde::Serialize;

use crate::output::{self, Format, Row};
use crate::{Error, program};

/// The signing key file in a keys folder.
const SIGNING_KEY: &str = "signing-key.pem";
/// The trust bundle file in a keys folder.
const TRUST: &str = "trust.pem";

pub(crate) const EXAMPLES: &str = "\
Examples:
  # First key of a fleet
  edgefleet keys generate --out ./keys

  # Rotate it: new key, bundle trusting old and new, the procedure printed
  edgefleet keys rotate --dir ./keys

  # Once every node runs on the new key, stop trusting the old one
  edgefleet keys retire --dir ./keys --key 0a1b2c3d4e5f6a7b

  # What is there
  edgefleet keys list --dir ./keys";

/// Arguments of `edgefleet keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Make a new signing key and a trust bundle with its public key.
    ///
    /// Writes DIR/signing-key.pem (the private key, PKCS#8 PEM, mode 0600: give it to the
    /// controller as --signing-key, e.g. from a Kubernetes Secret) and DIR/trust.pem (the trust
    /// bundle: give it to every agent as --trust-anchor), and prints the key id, which signed
    /// assignments carry. Refuses to overwrite an existing key or bundle unless --force: to change
    /// the key of a running fleet, use `keys rotate`.
    #[command(after_long_help = "\
Examples:
  edgefleet keys generate --out ./keys
  # Start over (agents refuse assignments signed by the old key once they get the new trust.pem)
  edgefleet keys generate --out ./keys --force")]
    Generate(GenerateArgs),
    /// Replace the signing key while agents keep accepting the controller: new key, bundle of old
    /// and new.
    ///
    /// Makes a new DIR/signing-key.pem, keeps the old one as DIR/signing-key.<old id>.pem and
    /// writes DIR/trust.pem with the old and the new public key (and any other key it trusted).
    /// Then prints the procedure: roll the bundle out to every agent, point the controller at the
    /// new key (it re-signs every assignment), and once every node reports the new generation,
    /// `keys retire` the old key.
    #[command(after_long_help = "\
Examples:
  edgefleet keys rotate --dir ./keys")]
    Rotate(RotateArgs),
    /// Stop trusting a key: drop its public key from DIR/trust.pem.
    ///
    /// The last step of a rotation, once every node reports an assignment generation signed by
    /// the new key: agents that get the smaller bundle refuse whatever the retired key signs.
    /// Refuses to retire the current signing key (agents would refuse the controller) and a key
    /// the bundle does not hold. An archived private key DIR/signing-key.<id>.pem is left in
    /// place (delete it when you no longer need it).
    #[command(after_long_help = "\
Examples:
  edgefleet keys list --dir ./keys
  edgefleet keys retire --dir ./keys --key 0a1b2c3d4e5f6a7b")]
    Retire(RetireArgs),
    /// Show the keys of a folder: key id, role (signing, trusted, archived) and file.
    ///
    /// `signing` is the controller's current key (signing-key.pem), `trusted` a public key of the
    /// trust bundle (trust.pem), `archived` a previous signing key kept by `keys rotate`. Warns
    /// when the signing key is not in the bundle (agents would refuse what it signs).
    #[command(after_long_help = "\
Examples:
  edgefleet keys list --dir ./keys
  edgefleet keys list --dir ./keys -o json")]
    List(ListArgs),
}

#[derive(Debug, Args)]
struct GenerateArgs {
    /// The folder to write signing-key.pem and trust.pem into (made if missing, mode 0700).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Replace an existing signing key and trust bundle.
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct RotateArgs {
    /// The keys folder (as made by `keys generate`).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct RetireArgs {
    /// The keys folder.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The id of the key to stop trusting (16 hex digits, as `keys list` shows).
    #[arg(long, value_name = "KEY_ID")]
    key: KeyId,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The keys folder.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

/// Runs `edgefleet keys …`.
pub fn run(args: KeysArgs) -> Result<(), Error> {
    match args.command {
        KeysCommand::Generate(args) => generate(args),
        KeysCommand::Rotate(args) => rotate(args),
        KeysCommand::Retire(args) => retire(args),
        KeysCommand::List(args) => list(args),
    }
}

fn generate(args: GenerateArgs) -> Result<(), Error> {
    let dir = &args.out;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(Error::io("cannot create", dir))?;
    let key_path = dir.join(SIGNING_KEY);
    let trust_path = dir.join(TRUST);
    if !args.force {
        if key_path.exists() {
            let which = SigningKey::load(&key_path)
                .map(|key| format!(" (key {})", key.key_id()))
                .unwrap_or_default();
            return Err(Error::Refused(format!(
                "{}{which} exists already. To change the key of a running fleet, rotate it: `{} keys rotate --dir {}` (agents keep accepting the old key until the new one is everywhere). To start over, pass --force: agents then refuse assignments signed by the old key as soon as they get the new trust.pem",
                key_path.display(),
                program(),
                dir.display()
            )));
        }
        if trust_path.exists() {
            return Err(Error::Refused(format!(
                "{} exists already (without {SIGNING_KEY}); pass --force to replace it with a bundle of the new key only",
                trust_path.display()
            )));
        }
    }
    let key = SigningKey::generate()?;
    replace_signing_key(dir, &key)?;
    let anchor: TrustAnchor = [key.verifying_key()].into_iter().collect();
    write_trust(dir, &anchor)?;
    println!("Generated signing key {}", key.key_id());
    let rows = [
        vec![
            key_path.display().to_string(),
            "the private key (mode 0600): the controller's --signing-key; keep it secret"
                .to_owned(),
        ],
        vec![
            trust_path.display().to_string(),
            "the trust bundle: every agent's --trust-anchor".to_owned(),
        ],
    ];
    print!(
        "{}",
        output::indent(&output::table(&["FILE", "WHAT"], rows.into_iter()))
    );
    Ok(())
}

fn rotate(args: RotateArgs) -> Result<(), Error> {
    let dir = &args.dir;
    let old = load_signing_key(dir)?;
    let old_id = old.key_id();
    let archive = archive_path(dir, old_id);
    if archive.exists() {
        // A rotation interrupted after archiving: the archive must be this very key.
        if SigningKey::load(&archive)?.key_id() != old_id {
            return Err(Error::Refused(format!(
                "{} exists but holds another key than {SIGNING_KEY}; move it away and run again",
                archive.display()
            )));
        }
    } else {
        old.save(&archive)?;
    }
    let mut anchor = load_trust_if_any(dir)?;
    let new = SigningKey::generate()?;
    anchor.insert(old.verifying_key());
    anchor.insert(new.verifying_key());
    // The new key is written last: until then the folder signs with the old key, which every
    // version of the bundle trusts.
    write_trust(dir, &anchor)?;
    replace_signing_key(dir, &new)?;

    let new_id = new.key_id();
    let program = program();
    let trusted: Vec<String> = anchor.key_ids().map(|id| id.to_string()).collect();
    println!("Rotated the signing key: {old_id} -> {new_id}");
    let rows = [
        vec![
            dir.join(SIGNING_KEY).display().to_string(),
            format!("the new signing key {new_id}"),
        ],
        vec![
            archive.display().to_string(),
            format!("the old signing key {old_id}, kept"),
        ],
        vec![
            dir.join(TRUST).display().to_string(),
            format!("trusts {}", trusted.join(", ")),
        ],
    ];
    print!(
        "{}",
        output::indent(&output::table(&["FILE", "WHAT"], rows.into_iter()))
    );
    println!();
    println!("Next:");
    println!(
        "  1. Roll out the new trust bundle {} to every agent (its --trust-anchor) and restart the agents: they then accept both keys.",
        dir.join(TRUST).display()
    );
    println!(
        "  2. Restart the controller on the new key {} (its --signing-key), or point it at it: it re-signs every assignment with {new_id}.",
        dir.join(SIGNING_KEY).display()
    );
    println!(
        "  3. Once every node reports the new assignment generation (EdgeNode status), drop the old key from the bundle, and roll it out again:"
    );
    println!(
        "       {program} keys retire --dir {} --key {old_id}",
        dir.display()
    );
    if anchor.len() > 2 {
        println!();
        println!(
            "Note: the bundle trusts {} keys; retire the ones no controller signs with any more.",
            anchor.len()
        );
    }
    Ok(())
}

fn retire(args: RetireArgs) -> Result<(), Error> {
    let dir = &args.dir;
    let trust_path = dir.join(TRUST);
    let anchor = TrustAnchor::load(&trust_path)?;
    let trusted: Vec<String> = anchor.key_ids().map(|id| id.to_string()).collect();
    if anchor.get(&args.key).is_none() {
        return Err(Error::Refused(format!(
            "{} does not trust key {} (it trusts {})",
            trust_path.display(),
            args.key,
            trusted.join(", ")
        )));
    }
    let key_path = dir.join(SIGNING_KEY);
    if key_path.exists() && SigningKey::load(&key_path)?.key_id() == args.key {
        return Err(Error::Refused(format!(
            "key {} is the current signing key ({}): agents would refuse every assignment the controller signs. Rotate first (`{} keys rotate --dir {}`), then retire the old key",
            args.key,
            key_path.display(),
            program(),
            dir.display()
        )));
    }
    let remaining: TrustAnchor = anchor
        .key_ids()
        .filter(|id| *id != args.key)
        .filter_map(|id| anchor.get(&id).copied())
        .collect();
    if remaining.is_empty() {
        return Err(Error::Refused(format!(
            "key {} is the only key of {}: agents would trust nothing",
            args.key,
            trust_path.display()
        )));
    }
    write_trust(dir, &remaining)?;
    let left: Vec<String> = remaining.key_ids().map(|id| id.to_string()).collect();
    println!(
        "Retired key {}: {} now trusts {}",
        args.key,
        trust_path.display(),
        left.join(", ")
    );
    println!(
        "Roll it out to every agent (--trust-anchor); agents that have it refuse whatever {} signs.",
        args.key
    );
    let archive = archive_path(dir, args.key);
    if archive.exists() {
        println!(
            "Its private key is still in {}: nothing trusts it any more once the bundle is rolled out; delete it when you no longer need it.",
            archive.display()
        );
    }
    Ok(())
}

/// One line of `keys list`.
#[derive(Debug, Serialize)]
struct KeyRow {
    key_id: String,
    role: &'static str,
    file: String,
}

impl Row for KeyRow {
    const HEADERS: &'static [&'static str] = &["KEY ID", "ROLE", "FILE"];
    fn cells(&self) -> Vec<String> {
        vec![self.key_id.clone(), self.role.to_owned(), self.file.clone()]
    }
}

fn list(args: ListArgs) -> Result<(), Error> {
    let dir = &args.dir;
    let mut rows = Vec::new();
    let key_path = dir.join(SIGNING_KEY);
    let signing = if key_path.exists() {
        let key = SigningKey::load(&key_path)?;
        rows.push(KeyRow {
            key_id: key.key_id().to_string(),
            role: "signing",
            file: key_path.display().to_string(),
        });
        Some(key.key_id())
    } else {
        None
    };
    let trust_path = dir.join(TRUST);
    let anchor = load_trust_if_any(dir)?;
    for id in anchor.key_ids() {
        rows.push(KeyRow {
            key_id: id.to_string(),
            role: "trusted",
            file: trust_path.display().to_string(),
        });
    }
    let entries = fs::read_dir(dir).map_err(Error::io("cannot list", dir))?;
    let mut archived = Vec::new();
    for entry in entries {
        let path = entry.map_err(Error::io("cannot list", dir))?.path();
        let id = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.strip_prefix("signing-key."))
            .and_then(|rest| rest.strip_suffix(".pem"))
            .and_then(|id| id.parse::<KeyId>().ok());
        if let Some(id) = id {
            archived.push((id, path));
        }
    }
    archived.sort();
    for (id, path) in archived {
        rows.push(KeyRow {
            key_id: id.to_string(),
            role: "archived",
            file: path.display().to_string(),
        });
    }
    if rows.is_empty() && args.output == Format::Table {
        return Err(Error::Refused(format!(
            "{} holds no keys: make one with `{} keys generate --out {}`",
            dir.display(),
            program(),
            dir.display()
        )));
    }
    output::print(&rows, args.output)?;
    if let Some(id) = signing
        && anchor.get(&id).is_none()
    {
        eprintln!(
            "warning: the signing key {id} is not in {}: agents refuse what it signs",
            trust_path.display()
        );
    }
    Ok(())
}

fn load_signing_key(dir: &Path) -> Result<SigningKey, Error> {
    let path = dir.join(SIGNING_KEY);
    if !path.exists() {
        return Err(Error::Refused(format!(
            "{} holds no {SIGNING_KEY}: make one with `{} keys generate --out {}`",
            dir.display(),
            program(),
            dir.display()
        )));
    }
    Ok(SigningKey::load(&path)?)
}

fn load_trust_if_any(dir: &Path) -> Result<TrustAnchor, Error> {
    let path = dir.join(TRUST);
    if path.exists() {
        Ok(TrustAnchor::load(&path)?)
    } else {
        Ok(TrustAnchor::new())
    }
}

fn archive_path(dir: &Path, id: KeyId) -> PathBuf {
    dir.join(format!("signing-key.{id}.pem"))
}

/// Writes `key` as DIR/signing-key.pem, replacing the file there in one rename.
fn replace_signing_key(dir: &Path, key: &SigningKey) -> Result<(), Error> {
    let path = dir.join(SIGNING_KEY);
    let staged = dir.join(format!("{SIGNING_KEY}.new"));
    remove_if_there(&staged)?;
    key.save(&staged)?;
    fs::rename(&staged, &path).map_err(Error::io("cannot replace", &path))
}

/// Writes DIR/trust.pem (mode 0644), replacing the file there in one rename.
fn write_trust(dir: &Path, anchor: &TrustAnchor) -> Result<(), Error> {
    let mut text = String::from(
        "# edgefleet trust bundle: the public keys agents accept signed assignments from.\n\
         # Every agent's --trust-anchor; `edgefleet keys list` shows the keys.\n",
    );
    for id in anchor.key_ids() {
        if let Some(key) = anchor.get(&id) {
            text.push_str(&format!("# key {id}\n{}", key.to_public_key_pem()?));
        }
    }
    let path = dir.join(TRUST);
    let staged = dir.join(format!("{TRUST}.new"));
    remove_if_there(&staged)?;
    fs::write(&staged, text).map_err(Error::io("cannot write", &staged))?;
    fs::rename(&staged, &path).map_err(Error::io("cannot replace", &path))
}

fn remove_if_there(path: &Path) -> Result<(), Error> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("cannot remove", path)(e)),
    }
}
