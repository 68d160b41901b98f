//! Why a command failed: one message for the operator, printed by `main`.

use std::path::PathBuf;

use edgefleet_pki::PkiError;
use edgefleet_protocol::signing::KeyError;

/// A failed or refused command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A key file or trust bundle could not be read, parsed or written.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A certificate, CA or the PKI folder.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// A file or folder outside those two.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted (`"cannot create"`, …).
        action: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The command would do harm or cannot be done as asked; the message says why and what to do.
    #[error("{0}")]
    Refused(String),
    /// The cluster, the standalone controller or a registry failed or refused; the message says
    /// which and what to do.
    #[error("{0}")]
    Fleet(String),
    /// An OCI registry.
    #[error(transparent)]
    Registry(#[from] edgefleet_controller::oci::OciError),
    /// The output could not be rendered.
    #[error("cannot print as {format}: {reason}")]
    Output {
        /// `json` or `yaml`.
        format: &'static str,
        /// The serializer's reason.
        reason: String,
    },
}

impl Error {
    /// An [`Error::Io`] maker for `map_err`.
    pub fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io {
            action,
            path,
            source,
        }
    }
}
