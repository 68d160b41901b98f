//! Wasm modules as OCI artifacts: pushing a module to a registry, and pulling one back **by
//! digest**, verified.
//!
//! This module owns the controller's side of the registry: the artifact layout it writes and
//! accepts, the TLS trust and credentials it uses, and every check between the registry's bytes
//! and a module the controller may publish to nodes. A registry is storage, not an authority: a
//! HandlerModule names its module by a reference **pinned by digest**
//! (`registry/repository@sha256:…`), so what it names cannot change after review, and nothing a
//! registry sends is trusted until it has been re-hashed here against that pin. A tag can be moved
//! by anyone who can push; a digest cannot.
//!
//! # Layout (CNCF TAG Runtime, "Wasm OCI Artifact layout")
//!
//! The layout of the CNCF TAG Runtime Wasm working group (tag-runtime.cncf.io, wgs/wasm,
//! deliverables, wasm-oci-artifact), which wasmCloud, Spin and runwasi read:
//!
//! ```text
//! OCI image manifest (application/vnd.oci.image.manifest.v1+json)
//!  ├─ config  application/vnd.wasm.config.v0+json
//!  │    {"created": RFC 3339, "author"?: …, "architecture": "wasm", "os": "wasip1",
//!  │     "layerDigests": ["sha256:<the layer>"]}
//!  ├─ layers  exactly one: application/wasm (the module's bytes, as built)
//!  └─ annotations  whatever the caller gives (org.opencontainers.image.version, .title, …)
//! ```
//!
//! `os` is `wasip1`: the layout says so for plain (non-component) Wasm, and edgefleet handlers are
//! core modules that import only the guest ABI. The layout asks consumers to reject a manifest with
//! more than one layer; so does [`Registry::pull`]. `layerDigests` keeps the config (and so the
//! manifest digest) distinct per module. `created` comes from the
//! `org.opencontainers.image.created` annotation when the caller gives one (then pushing the same
//! module with the same annotations twice gives the same manifest digest), else from the clock.
//!
//! Note: `oci_client::manifest::WASM_CONFIG_MEDIA_TYPE` and `WASM_LAYER_MEDIA_TYPE` are the older
//! Krustlet types (`application/vnd.wasm.config.v1+json`, `…content.layer.v1+wasm`), not this
//! layout: the constants here are used instead.
//!
//! # What a pull checks, in order
//!
//! 1. The reference is pinned by a `sha256:` digest (a tag alone is refused,
//!    [`OciError::Unpinned`]), before any request.
//! 2. The manifest's own SHA-256, computed here over the bytes received, equals the pin.
//! 3. It is an OCI image manifest whose config media type is the Wasm one, with exactly one layer,
//!    of media type `application/wasm` ([`OciError::NotWasm`]).
//! 4. The layer's declared size is within the caller's cap, before anything is downloaded
//!    ([`OciError::TooLarge`]).
//! 5. While downloading: never more bytes than declared; then the length and the SHA-256 of what
//!    arrived equal the layer descriptor ([`OciError::SizeMismatch`],
//!    [`OciError::DigestMismatch`]). oci-client verifies too, but these checks do not depend on it.
//!
//! The manifest itself is read whole by oci-client (no cap of ours applies to it); its size is
//! checked after the fact ([`MAX_MANIFEST_BYTES`]).
//!
//! # Transport
//!
//! HTTPS, trusting the system's roots plus an extra CA given by the caller (a private registry's);
//! plain HTTP only for the registries named in [`RegistryOptions::plain_http`]. Credentials are
//! oci-client's [`RegistryAuth`]: anonymous, basic, or a bearer token (token-service registries are
//! handled by oci-client's challenge flow). rustls uses the process-wide ring provider, installed
//! here if nobody did ([`edgefleet_protocol::tls::install_crypto_provider`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use edgefleet_protocol::Sha256Digest;
use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest,
};
use oci_client::{Client, Reference};
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

pub use oci_client::secrets::RegistryAuth;

use crate::fleet::{Problem, Resolution};

/// The config media type of a Wasm OCI artifact (CNCF TAG Runtime layout, v0).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// The media type of the artifact's one layer: the module's bytes.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// `architecture` in the config.
pub const WASM_ARCHITECTURE: &str = "wasm";
/// `os` in the config: plain (core) Wasm modules.
pub const WASM_OS: &str = "wasip1";
/// The largest manifest accepted (distribution's own limit is 4 MiB; a Wasm manifest is < 2 KiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a registry may leave a read without bytes.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a push or a pull failed. Every message says what to do; [`OciError::kind`] is a short
/// label for metrics.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The reference does not parse, or its digest is not `sha256:` + 64 lowercase hex digits.
    #[error(
        "bad OCI reference {reference:?}: {reason} (expected registry/repository@sha256:<64 hex>)"
    )]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A pull by tag: refused, since a tag can move.
    #[error(
        "{reference:?} is not pinned: pin the module by digest: {suggestion} (`edgefleet module push` prints the digest)"
    )]
    Unpinned {
        /// The reference as given.
        reference: String,
        /// The shape of the pinned reference, `registry/repository@sha256:…`.
        suggestion: String,
    },
    /// What the registry sent does not hash to the digest that names it: the registry's storage is
    /// damaged or tampered with, or something in between rewrites it. Nothing of it was used.
    #[error(
        "the {object} from the registry has digest {found}, not {expected}: its content was altered in the registry or on the way; nothing of it was used (re-push the module, and check the registry's storage)"
    )]
    DigestMismatch {
        /// `"manifest"` or `"module layer"`.
        object: &'static str,
        /// The digest it must have.
        expected: String,
        /// The digest of what arrived.
        found: String,
    },
    /// The registry sent a layer whose length differs from its descriptor (it stopped reading at
    /// the first byte too many).
    #[error(
        "the registry sent {found} bytes for a module layer declared as {declared} bytes (stopped reading): the registry's storage is damaged or tampered with; re-push the module"
    )]
    SizeMismatch {
        /// The size in the layer descriptor.
        declared: u64,
        /// Bytes received (at least this many when more than declared).
        found: u64,
    },
    /// The module's declared size is over the cap; nothing was downloaded.
    #[error(
        "the module layer is {size} bytes, over the limit of {cap} bytes: build a smaller module, or raise the limit"
    )]
    TooLarge {
        /// The size in the layer descriptor.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The artifact is not a Wasm module in the expected layout (or, when pushing, the bytes are
    /// not Wasm).
    #[error(
        "not a Wasm module artifact: {reason} (push it with `edgefleet module push`, which writes the CNCF Wasm OCI layout: config {WASM_CONFIG_MEDIA_TYPE}, one {WASM_LAYER_MEDIA_TYPE} layer)"
    )]
    NotWasm {
        /// What is wrong.
        reason: String,
    },
    /// The registry does not have the manifest or the blob.
    #[error(
        "{reference}: not found in the registry ({detail}): check the reference, or push the module"
    )]
    NotFound {
        /// The reference.
        reference: String,
        /// The registry's answer.
        detail: String,
    },
    /// The registry refused the credentials (or anonymous access).
    #[error(
        "{registry} refused access ({detail}): check the registry credentials and their rights on the repository"
    )]
    Unauthorized {
        /// The registry (host:port).
        registry: String,
        /// The registry's answer.
        detail: String,
    },
    /// The TLS handshake failed, typically a certificate not signed by a trusted CA.
    #[error(
        "TLS with {registry} failed: {detail} (give the registry's CA as the registry CA setting, or, for a development registry, list it as a plain-HTTP registry)"
    )]
    Tls {
        /// The registry (host:port).
        registry: String,
        /// rustls' reason.
        detail: String,
    },
    /// Any other failure talking to the registry (unreachable, timed out, a 5xx); worth a retry.
    #[error("registry {registry}: {source} (is it reachable? retried later)")]
    Registry {
        /// The registry (host:port).
        registry: String,
        /// oci-client's error.
        source: OciDistributionError,
    },
    /// The client settings are unusable (an unreadable or malformed CA file, an HTTP client that
    /// cannot be built).
    #[error("registry client settings: {0}")]
    Config(String),
}

impl OciError {
    /// A short, stable label for metrics (`edgefleet_..._errors_total{kind}`).
    pub fn kind(&self) -> &'static str {
        match self {
            OciError::InvalidReference { .. } => "bad_reference",
            OciError::Unpinned { .. } => "unpinned",
            OciError::DigestMismatch { .. } => "digest_mismatch",
            OciError::SizeMismatch { .. } => "size_mismatch",
            OciError::TooLarge { .. } => "too_large",
            OciError::NotWasm { .. } => "not_wasm",
            OciError::NotFound { .. } => "not_found",
            OciError::Unauthorized { .. } => "unauthorized",
            OciError::Tls { .. } => "tls",
            OciError::Registry { .. } => "registry",
            OciError::Config(_) => "config",
        }
    }

    /// Whether the reference itself is at fault, so that no retry can help until the spec changes:
    /// not pinned, malformed, or (a pinned manifest being immutable) naming something that is not
    /// an acceptable Wasm module. Everything else (the registry unreachable, refusing, missing the
    /// module, or serving altered bytes) may get better by itself or by fixing the registry.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            OciError::InvalidReference { .. }
                | OciError::Unpinned { .. }
                | OciError::NotWasm { .. }
                | OciError::TooLarge { .. }
        )
    }

    /// The condition reason for a HandlerModule whose pull failed this way.
    pub fn reason(&self) -> &'static str {
        match self {
            OciError::InvalidReference { .. } => "InvalidImage",
            OciError::Unpinned { .. } => "ImageNotPinned",
            OciError::DigestMismatch { .. } | OciError::SizeMismatch { .. } => "DigestMismatch",
            OciError::TooLarge { .. } => "ModuleTooLarge",
            OciError::NotWasm { .. } => "NotAWasmModule",
            OciError::NotFound { .. } => "ImageNotFound",
            OciError::Unauthorized { .. } => "RegistryUnauthorized",
            OciError::Tls { .. } => "RegistryTlsError",
            OciError::Registry { .. } => "RegistryUnavailable",
            OciError::Config(_) => "RegistryClientConfig",
        }
    }
}

/// A HandlerModule's resolution after a failed pull: refused when the reference itself is at fault
/// ([`OciError::is_permanent`]), else unavailable (tried again).
pub fn resolution_of(error: &OciError) -> Resolution {
    let problem = Problem::new(error.reason(), error.to_string());
    if error.is_permanent() {
        Resolution::Refused(problem)
    } else {
        Resolution::Unavailable(problem)
    }
}

/// A reference pinned by a SHA-256 digest: `registry/repository[:tag]@sha256:<64 hex>` (a tag
/// beside the digest is ignored when pulling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinnedReference {
    reference: Reference,
    digest: Sha256Digest,
}

impl PinnedReference {
    /// Parses `text`; a tag-only reference is [`OciError::Unpinned`].
    pub fn parse(text: &str) -> Result<Self, OciError> {
        let reference = parse_reference(text)?;
        let Some(digest) = reference.digest() else {
            return Err(OciError::Unpinned {
                reference: text.to_owned(),
                suggestion: format!(
                    "{}/{}@sha256:…",
                    reference.registry(),
                    reference.repository()
                ),
            });
        };
        let digest = parse_sha256(digest).map_err(|reason| OciError::InvalidReference {
            reference: text.to_owned(),
            reason,
        })?;
        Ok(PinnedReference { reference, digest })
    }

    /// The registry, `host[:port]`.
    pub fn registry(&self) -> &str {
        self.reference.registry()
    }

    /// The repository, e.g. `edgefleet/thermostat`.
    pub fn repository(&self) -> &str {
        self.reference.repository()
    }

    /// The manifest digest it is pinned to.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }
}

impl std::fmt::Display for PinnedReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}@sha256:{}",
            self.registry(),
            self.repository(),
            self.digest
        )
    }
}

/// How to reach registries.
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// A CA certificate (PEM, one or more) to trust besides the system roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Whether the system's roots are trusted (default true). With false, only `extra_ca_pem`.
    pub system_roots: bool,
    /// Registries (`host:port`, as in references) reached over plain HTTP: development only.
    pub plain_http: Vec<String>,
    /// Credentials for every registry this client talks to.
    pub auth: RegistryAuth,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Read timeout (a read that gets no bytes for this long fails).
    pub read_timeout: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            extra_ca_pem: None,
            system_roots: true,
            plain_http: Vec::new(),
            auth: RegistryAuth::Anonymous,
            connect_timeout: CONNECT_TIMEOUT,
            read_timeout: READ_TIMEOUT,
        }
    }
}

/// A registry client for Wasm module artifacts.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    auth: RegistryAuth,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("auth", &self.auth)
            .finish_non_exhaustive()
    }
}

/// What a push wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedModule {
    /// The manifest's digest: what a HandlerModule pins.
    pub manifest_digest: Sha256Digest,
    /// `registry/repository@sha256:<manifest digest>`, for `spec.image`.
    pub pinned: String,
    /// The module's own SHA-256 (the layer's digest; what agents verify).
    pub sha256: Sha256Digest,
    /// The module's size in bytes.
    pub size: u64,
}

/// A module pulled by digest and verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledModule {
    /// The module's bytes.
    pub wasm: Vec<u8>,
    /// Their SHA-256 (computed here; equal to the layer's digest).
    pub sha256: Sha256Digest,
    /// The manifest's digest (computed here; equal to the pin).
    pub manifest_digest: Sha256Digest,
    /// The manifest's annotations.
    pub annotations: BTreeMap<String, String>,
}

impl Registry {
    /// A client with the system roots plus the CA in `ca_file` (PEM) when given, anonymous, and
    /// plain HTTP for exactly the registries in `plain_http`.
    pub fn new(ca_file: Option<&Path>, plain_http: &[String]) -> Result<Self, OciError> {
        let extra_ca_pem = ca_file
            .map(|path| {
                std::fs::read(path).map_err(|e| {
                    OciError::Config(format!(
                        "cannot read the registry CA file {}: {e}",
                        path.display()
                    ))
                })
            })
            .transpose()?;
        Self::with_options(RegistryOptions {
            extra_ca_pem,
            plain_http: plain_http.to_vec(),
            ..RegistryOptions::default()
        })
    }

    /// A client as `options` say.
    pub fn with_options(options: RegistryOptions) -> Result<Self, OciError> {
        edgefleet_protocol::tls::install_crypto_provider();
        let mut certificates = Vec::new();
        if let Some(pem) = &options.extra_ca_pem {
            // Parsed here so that a bad file is an error now, not a silently ignored root.
            let parsed: Vec<_> = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
                .collect::<Result<_, _>>()
                .map_err(|e| OciError::Config(format!("the registry CA is not PEM: {e}")))?;
            if parsed.is_empty() {
                return Err(OciError::Config(
                    "the registry CA has no certificate (expected -----BEGIN CERTIFICATE-----)"
                        .into(),
                ));
            }
            certificates.extend(parsed.into_iter().map(|der| Certificate {
                encoding: CertificateEncoding::Der,
                data: der.to_vec(),
            }));
        }
        let mut config = ClientConfig {
            protocol: if options.plain_http.is_empty() {
                ClientProtocol::Https
            } else {
                ClientProtocol::HttpsExcept(options.plain_http.clone())
            },
            // An image index is refused, never resolved to a platform entry.
            platform_resolver: None,
            connect_timeout: Some(options.connect_timeout),
            read_timeout: Some(options.read_timeout),
            ..ClientConfig::default()
        };
        if options.system_roots {
            config.extra_root_certificates = certificates;
        } else if certificates.is_empty() {
            return Err(OciError::Config(
                "system roots are off and no registry CA is given: nothing would be trusted".into(),
            ));
        } else {
            config.tls_certs_only = certificates;
        }
        // Not Client::new: it falls back to a default client (without the CA) on error.
        let client = Client::try_from(config)
            .map_err(|e| OciError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Registry {
            client,
            auth: options.auth,
        })
    }

    /// Pushes `wasm` to `reference` (`registry/repository:tag`) as a Wasm OCI artifact with
    /// `annotations` on its manifest; returns the manifest digest to pin.
    pub async fn push(
        &self,
        reference: &str,
        wasm: &[u8],
        annotations: &BTreeMap<String, String>,
    ) -> Result<PushedModule, OciError> {
        let image = parse_reference(reference)?;
        if image.digest().is_some() {
            return Err(OciError::InvalidReference {
                reference: reference.to_owned(),
                reason: "push to a tag (registry/repository:tag): the digest is known only after the push".into(),
            });
        }
        if !wasm.starts_with(b"\0asm") {
            return Err(OciError::NotWasm {
                reason: "the bytes to push do not start with the Wasm magic \\0asm".into(),
            });
        }
        let sha256 = Sha256Digest::of(wasm);
        let layer_digest = format!("sha256:{sha256}");
        let created = annotations
            .get(oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_CREATED)
            .cloned()
            .unwrap_or_else(|| rfc3339(SystemTime::now()));
        let config = WasmConfig {
            created: &created,
            author: annotations
                .get(oci_client::annotations::ORG_OPENCONTAINERS_IMAGE_AUTHORS)
                .map(String::as_str),
            architecture: WASM_ARCHITECTURE,
            os: WASM_OS,
            layer_digests: [&layer_digest],
        };
        let config = serde_json::to_vec(&config)
            .map_err(|e| OciError::Config(format!("cannot encode the Wasm config: {e}")))?;
        let config_digest = format!("sha256:{}", Sha256Digest::of(&config));
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(OCI_IMAGE_MEDIA_TYPE.to_owned()),
            config: OciDescriptor {
                media_type: WASM_CONFIG_MEDIA_TYPE.to_owned(),
                digest: config_digest.clone(),
                size: len_i64(config.len()),
                ..OciDescriptor::default()
            },
            layers: vec![OciDescriptor {
                media_type: WASM_LAYER_MEDIA_TYPE.to_owned(),
                digest: layer_digest.clone(),
                size: len_i64(wasm.len()),
                ..OciDescriptor::default()
            }],
            subject: None,
            artifact_type: None,
            annotations: (!annotations.is_empty()).then(|| annotations.clone()),
        };
        // These exact bytes are what the registry stores and what the digest is of.
        let manifest = serde_json::to_vec(&manifest)
            .map_err(|e| OciError::Config(format!("cannot encode the manifest: {e}")))?;
        let manifest_digest = Sha256Digest::of(&manifest);

        let registry = image.registry().to_owned();
        let failed = |e| classify(&registry, reference, e);
        self.client
            .store_auth_if_needed(image.resolve_registry(), &self.auth)
            .await;
        self.client
            .push_blob(&image, wasm.to_vec(), &layer_digest)
            .await
            .map_err(failed)?;
        self.client
            .push_blob(&image, config, &config_digest)
            .await
            .map_err(failed)?;
        self.client
            .push_manifest_raw(
                &image,
                manifest,
                axum::http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE),
            )
            .await
            .map_err(failed)?;
        Ok(PushedModule {
            manifest_digest,
            pinned: format!(
                "{}/{}@sha256:{manifest_digest}",
                image.registry(),
                image.repository()
            ),
            sha256,
            size: wasm.len() as u64,
        })
    }

    /// Pulls the module that `reference` (pinned by digest) names, at most `max_bytes` long, and
    /// verifies it (see the module docs for the checks).
    pub async fn pull(&self, reference: &str, max_bytes: u64) -> Result<PulledModule, OciError> {
        let pinned = PinnedReference::parse(reference)?;
        let image = &pinned.reference;
        let registry = image.registry().to_owned();
        let failed = |e| classify(&registry, reference, e);

        let (body, _) = self
            .client
            .pull_manifest_raw(image, &self.auth, &[OCI_IMAGE_MEDIA_TYPE])
            .await
            .map_err(failed)?;
        // Re-hashed here, whatever oci-client checked.
        let found = Sha256Digest::of(&body);
        if found != pinned.digest {
            return Err(OciError::DigestMismatch {
                object: "manifest",
                expected: format!("sha256:{}", pinned.digest),
                found: format!("sha256:{found}"),
            });
        }
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(not_wasm(format!(
                "the manifest is {} bytes (at most {MAX_MANIFEST_BYTES})",
                body.len()
            )));
        }
        let (layer, annotations) = wasm_layer(&body)?;
        let declared = u64::try_from(layer.size)
            .map_err(|_| not_wasm(format!("the layer has a negative size {}", layer.size)))?;
        if declared > max_bytes {
            return Err(OciError::TooLarge {
                size: declared,
                cap: max_bytes,
            });
        }
        let expected = parse_sha256(&layer.digest).map_err(|reason| {
            not_wasm(format!("the layer's digest {:?}: {reason}", layer.digest))
        })?;

        let mut stream = self
            .client
            .pull_blob_stream(image, &layer)
            .await
            .map_err(failed)?;
        if let Some(length) = stream.content_length
            && length != declared
        {
            return Err(OciError::SizeMismatch {
                declared,
                found: length,
            });
        }
        let mut wasm = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
        let mut hasher = Sha256::new();
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // oci-client's own check at the end of the stream: ours below decides.
                Err(e) if is_digest_error(&e) => break,
                Err(e) => return Err(failed(OciDistributionError::IoError(e))),
            };
            let found = wasm.len() as u64 + chunk.len() as u64;
            if found > declared {
                return Err(OciError::SizeMismatch { declared, found });
            }
            hasher.update(&chunk);
            wasm.extend_from_slice(&chunk);
        }
        if wasm.len() as u64 != declared {
            return Err(OciError::SizeMismatch {
                declared,
                found: wasm.len() as u64,
            });
        }
        let sha256 = Sha256Digest::from_bytes(hasher.finalize().into());
        if sha256 != expected {
            return Err(OciError::DigestMismatch {
                object: "module layer",
                expected: layer.digest,
                found: format!("sha256:{sha256}"),
            });
        }
        Ok(PulledModule {
            wasm,
            sha256,
            manifest_digest: pinned.digest,
            annotations,
        })
    }
}

/// The Wasm config (CNCF layout), in its field order.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    created: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    author: Option<&'a str>,
    architecture: &'static str,
    os: &'static str,
    layer_digests: [&'a str; 1],
}

/// The one `application/wasm` layer of a Wasm artifact manifest, and the manifest's annotations.
fn wasm_layer(body: &[u8]) -> Result<(OciDescriptor, BTreeMap<String, String>), OciError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| not_wasm(format!("the manifest is not JSON: {e}")))?;
    match value.get("mediaType").and_then(serde_json::Value::as_str) {
        None | Some(OCI_IMAGE_MEDIA_TYPE) => {}
        Some(OCI_IMAGE_INDEX_MEDIA_TYPE) => {
            return Err(not_wasm(
                "an image index (several platforms), not a module manifest: pin the digest of the module's own manifest".into(),
            ));
        }
        Some(other) => return Err(not_wasm(format!("manifest media type {other}"))),
    }
    let manifest: OciImageManifest = serde_json::from_value(value)
        .map_err(|e| not_wasm(format!("not an OCI image manifest: {e}")))?;
    if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE {
        return Err(not_wasm(format!(
            "config media type {}",
            manifest.config.media_type
        )));
    }
    let mut layers = manifest.layers.into_iter();
    let (Some(layer), None) = (layers.next(), layers.next()) else {
        return Err(not_wasm(
            "the manifest must have exactly one layer (a composed module)".into(),
        ));
    };
    if layer.media_type != WASM_LAYER_MEDIA_TYPE {
        return Err(not_wasm(format!("layer media type {}", layer.media_type)));
    }
    Ok((layer, manifest.annotations.unwrap_or_default()))
}

fn not_wasm(reason: String) -> OciError {
    OciError::NotWasm { reason }
}

fn parse_reference(text: &str) -> Result<Reference, OciError> {
    Reference::from_str(text).map_err(|e| OciError::InvalidReference {
        reference: text.to_owned(),
        reason: e.to_string(),
    })
}

/// `sha256:<64 lowercase hex>` → the digest.
fn parse_sha256(digest: &str) -> Result<Sha256Digest, String> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or_else(|| format!("only sha256 digests are supported, not {digest:?}"))?;
    Sha256Digest::from_str(hex).map_err(|e| e.to_string())
}

fn len_i64(len: usize) -> i64 {
    i64::try_from(len).unwrap_or(i64::MAX)
}

/// Whether a stream error is oci-client's digest verification (its `VerifyingStream`).
fn is_digest_error(error: &std::io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<DigestError>().is_some())
}

/// The rustls error somewhere in `error`'s chain. An `io::Error`'s `source()` skips the error it
/// wraps, so the walk goes into wrapped errors itself (hyper wraps rustls' error in two of them).
fn tls_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut current = Some(error);
    while let Some(e) = current {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        current = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    None
}

/// oci-client's error as ours.
fn classify(registry: &str, reference: &str, error: OciDistributionError) -> OciError {
    let unauthorized = |detail: String| OciError::Unauthorized {
        registry: registry.to_owned(),
        detail,
    };
    let not_found = |detail: String| OciError::NotFound {
        reference: reference.to_owned(),
        detail,
    };
    match &error {
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => {
            return OciError::DigestMismatch {
                object: "manifest",
                expected: expected.clone(),
                found: actual.clone(),
            };
        }
        OciDistributionError::AuthenticationFailure(detail) => return unauthorized(detail.clone()),
        OciDistributionError::UnauthorizedError { url } => {
            return unauthorized(format!("401 for {url}"));
        }
        OciDistributionError::ImageManifestNotFoundError(detail) => {
            return not_found(detail.clone());
        }
        OciDistributionError::RegistryError { envelope, .. } => {
            let codes = || envelope.errors.iter().map(|e| &e.code);
            if codes().any(|c| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied)) {
                return unauthorized(envelope.to_string());
            }
            if codes().any(|c| {
                matches!(
                    c,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::BlobUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            }) {
                return not_found(envelope.to_string());
            }
        }
        OciDistributionError::ServerError {
            code: 401 | 403,
            message,
            ..
        } => {
            return unauthorized(message.clone());
        }
        OciDistributionError::ServerError {
            code: 404, message, ..
        } => {
            return not_found(message.clone());
        }
        _ => {}
    }
    if let Some(tls) = tls_error(&error) {
        return OciError::Tls {
            registry: registry.to_owned(),
            detail: tls.to_string(),
        };
    }
    OciError::Registry {
        registry: registry.to_owned(),
        source: error,
    }
}

/// `time` as RFC 3339 in UTC, whole seconds (`2026-11-26T09:30:00Z`).
fn rfc3339(time: SystemTime) -> String {
    let secs = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(at(4_102_444_799), "2099-12-31T23:59:59Z");
    }

    #[test]
    fn references_must_be_pinned_by_sha256() {
        let hex = "ab".repeat(32);
        let pinned =
            PinnedReference::parse(&format!("127.0.0.1:5000/edgefleet/thermostat@sha256:{hex}"))
                .expect("pinned");
        assert_eq!(pinned.registry(), "127.0.0.1:5000");
        assert_eq!(pinned.repository(), "edgefleet/thermostat");
        assert_eq!(
            pinned.to_string(),
            format!("127.0.0.1:5000/edgefleet/thermostat@sha256:{hex}")
        );
        // A tag beside the digest is allowed (and ignored).
        assert!(PinnedReference::parse(&format!("r.example/m:1.0@sha256:{hex}")).is_ok());

        let err = PinnedReference::parse("127.0.0.1:5000/edgefleet/thermostat:1.0.0").unwrap_err();
        assert_eq!(err.kind(), "unpinned");
        assert!(err.is_permanent());
        assert!(
            err.to_string()
                .contains("pin the module by digest: 127.0.0.1:5000/edgefleet/thermostat@sha256:…"),
            "{err}"
        );
        for bad in [
            "not a reference".to_owned(),
            String::new(),
            format!("r.example/m@sha512:{}", "ab".repeat(64)),
            "r.example/m@sha256:abc".to_owned(),
        ] {
            let err = PinnedReference::parse(&bad).unwrap_err();
            assert_eq!(err.kind(), "bad_reference", "{bad}: {err}");
        }
    }

    fn manifest(config: &str, layers: &[&str]) -> Vec<u8> {
        let layers: Vec<_> = layers
            .iter()
            .map(|media_type| {
                serde_json::json!({"mediaType": media_type, "digest": format!("sha256:{}", "cd".repeat(32)), "size": 10})
            })
            .collect();
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": config, "digest": format!("sha256:{}", "ef".repeat(32)), "size": 2},
            "layers": layers,
            "annotations": {"org.opencontainers.image.version": "1.0.0"},
        }))
        .expect("json")
    }

    #[test]
    fn only_the_wasm_layout_is_accepted() {
        let (layer, annotations) =
            wasm_layer(&manifest(WASM_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE])).expect("wasm");
        assert_eq!(layer.size, 10);
        assert_eq!(annotations["org.opencontainers.image.version"], "1.0.0");

        let refused = [
            manifest("application/vnd.oci.image.config.v1+json", &[WASM_LAYER_MEDIA_TYPE]),
            manifest(WASM_CONFIG_MEDIA_TYPE, &["application/vnd.oci.image.layer.v1.tar+gzip"]),
            manifest(WASM_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE]),
            manifest(WASM_CONFIG_MEDIA_TYPE, &[]),
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#.to_vec(),
            b"not json".to_vec(),
        ];
        for body in refused {
            let err = wasm_layer(&body).unwrap_err();
            assert_eq!(err.kind(), "not_wasm", "{err}");
        }
    }

    #[test]
    fn permanent_errors_are_refused_others_retried() {
        let too_large = OciError::TooLarge { size: 2, cap: 1 };
        assert!(
            matches!(resolution_of(&too_large), Resolution::Refused(p) if p.reason == "ModuleTooLarge")
        );
        let mismatch = OciError::DigestMismatch {
            object: "module layer",
            expected: "sha256:a".into(),
            found: "sha256:b".into(),
        };
        assert!(
            matches!(resolution_of(&mismatch), Resolution::Unavailable(p) if p.reason == "DigestMismatch")
        );
    }
}
