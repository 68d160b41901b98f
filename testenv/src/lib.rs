//! Test environments with real servers, for edgefleet's integration tests (never for the product).
//!
//! **[`ControlPlane`]** owns a real Kubernetes control plane for one test: an etcd and a
//! kube-apiserver on 127.0.0.1 (free ports, retried when another process takes one first), RBAC on,
//! users authenticated by client certificates from a CA made at test time, and a service-account
//! signing key so that TokenRequest and TokenReview work. It is modelled on controller-runtime's
//! envtest: nothing else runs (no controller-manager, scheduler or kubelet: Pods never start,
//! owned objects are not garbage-collected, ServiceAccount token Secrets are not made). The point is
//! that a controller under test talks to the real API server — real validation, real server-side
//! apply, real watches — and runs with exactly the RBAC its ServiceAccount is granted
//! ([`ControlPlane::service_account_kubeconfig`]), so a missing permission in the shipped
//! manifests fails a test rather than a cluster.
//!
//! The binaries (`etcd`, `kube-apiserver`, `kubectl`, pinned in `testenv/go.mod`: etcd
//! [`ETCD_VERSION`], Kubernetes [`KUBERNETES_VERSION`]) are built from source by
//! `scripts/controlplane.sh` (which `scripts/setup.sh` runs) into
//! `~/.cache/edgefleet/controlplane/v1.36.3`, or the directory in [`CONTROLPLANE_DIR_ENV`]. Go is
//! needed only for that build.
//!
//! **Processes**: both are killed on drop, and with the test process (`PR_SET_PDEATHSIG`, set by a
//! spawner thread that lives as long as the process, so a plane may outlive the thread that
//! started it). A failed start returns an error quoting the tail of the failing process's log.
//!
//! ```no_run
//! # fn main() -> Result<(), edgefleet_testenv::TestenvError> {
//! use edgefleet_testenv::{ControlPlane, run_kubectl};
//!
//! let plane = ControlPlane::start()?;
//! plane.apply("k3s/controller-rbac.yaml")?; // kubectl apply --server-side, as admin
//! let controller = plane.service_account_kubeconfig("edgefleet-system", "edgefleet-controller")?;
//! let mut get = plane.kubectl_as(&controller);
//! get.args(["get", "configmaps", "-n", "edgefleet-system"]);
//! let listing = run_kubectl(get)?; // Err(TestenvError::Kubectl { .. }) when forbidden
//! # let _ = listing; Ok(()) }
//! ```
//!
//! [`registry`] (a real OCI registry for tests) lives beside it.

use std::path::{Path, PathBuf};
use std::time::Duration;

mod controlplane;
mod der;
pub mod http;
mod kubeconfig;
mod pki;
mod probe;
mod process;
pub mod registry;

pub use controlplane::{ADMIN_USER, ControlPlane, KEEP_ENV, Options, run_kubectl};
pub use kubeconfig::CONTEXT;

/// The Kubernetes release the binaries are built from (`testenv/go.mod`).
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// The etcd release (`testenv/go.mod`).
pub const ETCD_VERSION: &str = "v3.6.8";
/// Environment variable naming the directory with `etcd`, `kube-apiserver` and `kubectl`, instead
/// of `~/.cache/edgefleet/controlplane/v1.36.3`.
pub const CONTROLPLANE_DIR_ENV: &str = "EDGEFLEET_CONTROLPLANE_DIR";

/// Everything that can go wrong in this crate's control plane.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestenvError {
    /// A control plane binary is not where it is looked for.
    #[error(
        "{tool} not found at {}: run scripts/setup.sh (or scripts/controlplane.sh) to build the \
         test control plane (or set {CONTROLPLANE_DIR_ENV} to a directory with etcd, \
         kube-apiserver and kubectl)",
        path.display()
    )]
    MissingBinary {
        /// `etcd`, `kube-apiserver` or `kubectl`.
        tool: &'static str,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// Neither [`CONTROLPLANE_DIR_ENV`] nor `HOME` is set.
    #[error(
        "neither {CONTROLPLANE_DIR_ENV} nor HOME is set: cannot find the control plane binaries"
    )]
    NoBinaryDir,
    /// A file-system or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A process could not be started.
    #[error("cannot start {}: {source}", program.display())]
    Spawn {
        /// The executable.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// rcgen refused to make a key or certificate.
    #[error("making the {what}: {source}")]
    Certificate {
        /// Which one.
        what: &'static str,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// The TLS settings for the readiness probe were refused.
    #[error("TLS settings for the readiness probe: {0}")]
    Tls(#[from] rustls::Error),
    /// A process exited while the plane was starting.
    #[error("{process} exited during start-up ({status}); the end of {}:\n{log_tail}", log.display())]
    Exited {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// Its exit status.
        status: String,
        /// Its log file (kept only with [`KEEP_ENV`]).
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },
    /// A process did not become ready before the deadline.
    #[error(
        "{process} not ready after {waited:?} (last probe: {last_probe}); the end of {}:\n{log_tail}",
        log.display()
    )]
    NotReady {
        /// `etcd` or `kube-apiserver`.
        process: &'static str,
        /// Time since the start began.
        waited: Duration,
        /// What the last readiness probe saw.
        last_probe: String,
        /// Its log file (kept only with [`KEEP_ENV`]).
        log: PathBuf,
        /// The last lines of its log.
        log_tail: String,
    },
    /// No set of unused loopback ports was found.
    #[error("no free loopback ports found")]
    NoFreePorts,
    /// A user, group, namespace or name that cannot be put in a certificate or kubeconfig.
    #[error("invalid user, group, namespace or name: {0:?}")]
    InvalidName(String),
    /// kubectl exited with an error.
    #[error("`{command}` failed ({status}): {stderr}")]
    Kubectl {
        /// The command, without the harness's `--kubeconfig` and `--cache-dir`.
        command: String,
        /// kubectl's exit status.
        status: String,
        /// What kubectl wrote to stderr.
        stderr: String,
    },
}

impl TestenvError {
    /// kubectl's stderr, when this is a [`TestenvError::Kubectl`].
    pub fn kubectl_stderr(&self) -> Option<&str> {
        match self {
            TestenvError::Kubectl { stderr, .. } => Some(stderr),
            _ => None,
        }
    }

    /// Whether this is kubectl reporting that the API server refused the request (HTTP 403):
    /// `Error from server (Forbidden): …` from most commands, `error: failed to create …: … is
    /// forbidden: User "…" cannot …` from `kubectl create <kind>`.
    pub fn is_forbidden(&self) -> bool {
        self.kubectl_stderr().is_some_and(|e| {
            e.contains("Error from server (Forbidden)") || e.contains(" is forbidden: User \"")
        })
    }
}

/// Where the control plane binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `etcd`.
    pub etcd: PathBuf,
    /// `kube-apiserver`.
    pub kube_apiserver: PathBuf,
    /// `kubectl`.
    pub kubectl: PathBuf,
}

impl Binaries {
    /// The binaries in [`CONTROLPLANE_DIR_ENV`], else in `~/.cache/edgefleet/controlplane/v1.36.3`;
    /// [`TestenvError::MissingBinary`] says how to build them.
    pub fn locate() -> Result<Binaries, TestenvError> {
        let dir = match std::env::var_os(CONTROLPLANE_DIR_ENV) {
            Some(dir) if !dir.is_empty() => PathBuf::from(dir),
            _ => {
                let home = std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .ok_or(TestenvError::NoBinaryDir)?;
                Path::new(&home)
                    .join(".cache/edgefleet/controlplane")
                    .join(KUBERNETES_VERSION)
            }
        };
        Self::in_dir(&dir)
    }

    /// The binaries in `dir`, each checked to be an executable file.
    pub fn in_dir(dir: &Path) -> Result<Binaries, TestenvError> {
        use std::os::unix::fs::PermissionsExt;
        let find = |tool: &'static str| {
            let path = dir.join(tool);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(path),
                _ => Err(TestenvError::MissingBinary { tool, path }),
            }
        };
        Ok(Binaries {
            etcd: find("etcd")?,
            kube_apiserver: find("kube-apiserver")?,
            kubectl: find("kubectl")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_tell_how_to_build_them() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let err = Binaries::in_dir(dir.path())
            .err()
            .ok_or("found binaries in an empty dir")?;
        assert!(matches!(
            err,
            TestenvError::MissingBinary { tool: "etcd", .. }
        ));
        assert!(err.to_string().contains("scripts/setup.sh"), "{err}");

        // Present but not executable is missing too.
        for tool in ["etcd", "kube-apiserver"] {
            std::fs::write(dir.path().join(tool), "")?;
            std::fs::set_permissions(
                dir.path().join(tool),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
        }
        std::fs::write(dir.path().join("kubectl"), "")?;
        let err = Binaries::in_dir(dir.path())
            .err()
            .ok_or("a non-executable kubectl was found")?;
        assert!(matches!(
            err,
            TestenvError::MissingBinary {
                tool: "kubectl",
                ..
            }
        ));
        Ok(())
    }
}
