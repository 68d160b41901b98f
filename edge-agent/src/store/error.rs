//! Why a store operation failed, each with what to do about it.

use std::path::PathBuf;

use edgefleet_protocol::{ClassId, Sha256Digest};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the database's lock.
    #[error(
        "the store at {} is locked by another process: is another agent running on this node? Stop it, or give this agent a store directory of its own",
        path.display()
    )]
    Locked {
        /// The store's directory.
        path: PathBuf,
    },
    /// sled could not open the database.
    #[error(
        "cannot open the store at {}: {source}. Check that the directory is writable and the disk has space; if sled reports corruption, move the directory aside: the agent then starts afresh, fetching modules and assignments again but losing device state and unsent upstream messages",
        path.display()
    )]
    Open {
        /// The store's directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// The database was written in another on-disk format than this agent reads.
    #[error(
        "the store at {} has on-disk format {found}; this agent reads format {expected}. Run an agent release that reads format {found}, or move the directory aside to start afresh",
        path.display()
    )]
    Format {
        /// The store's directory.
        path: PathBuf,
        /// The format found.
        found: u64,
        /// The format this agent reads ([`super::FORMAT`]).
        expected: u64,
    },
    /// The operating system gave no random bytes for a new database's epoch.
    #[error(
        "cannot create the store at {}: the operating system gave no random bytes for its epoch ({source})",
        path.display()
    )]
    Entropy {
        /// The store's directory.
        path: PathBuf,
        /// The error from the OS.
        #[source]
        source: getrandom::Error,
    },
    /// sled failed a read or write.
    #[error(
        "the store's database failed: {0}. Check free disk space and the kernel log for I/O errors"
    )]
    Storage(#[from] sled::Error),
    /// An entry that cannot be what the store wrote. Nothing of it is returned.
    #[error("corrupt entry {key} in the store's {tree} tree: {detail}")]
    Corrupt {
        /// The tree holding it.
        tree: &'static str,
        /// Its key, readable (a digest in hex, a seq, a class or device id).
        key: String,
        /// What is wrong with it and what to do.
        detail: String,
    },
    /// A value larger than the store keeps; nothing was written.
    #[error("{what} is {len} bytes; the store keeps at most {max}, so nothing was written")]
    TooLarge {
        /// What the value was.
        what: String,
        /// Its length.
        len: usize,
        /// The store's limit for it.
        max: usize,
    },
    /// An assignment generation not newer than the applied one.
    #[error(
        "class {class} has applied generation {applied}; generation {offered} is not newer (a redelivered or replayed assignment): ignore it"
    )]
    StaleGeneration {
        /// The class.
        class: ClassId,
        /// The generation applied last.
        applied: u64,
        /// The generation offered.
        offered: u64,
    },
    /// A rollback of a class without a previous version.
    #[error(
        "class {class} has no previous version to roll back to: keep the active one quarantined until a new assignment arrives"
    )]
    NoPreviousVersion {
        /// The class.
        class: ClassId,
    },
    /// A rollback from a version that is not the class's active one.
    #[error(
        "class {class} does not run module {module} (another switch came first): nothing to roll back from"
    )]
    NotActive {
        /// The class.
        class: ClassId,
        /// The module the rollback was from.
        module: Sha256Digest,
    },
}
