//! A fleet's development PKI, kept in one folder: three certificate authorities and the broker,
//! node, controller and device certificates they issue. `edgefleet certs …` is its command line;
//! tests use it to run brokers and clients on exactly what an operator gets.
//!
//! # Three CAs, and which broker trusts which
//!
//! The brokers fence clients by certificate common name, and device ids, node names and
//! `edgefleet-controller` share that one name space (`brokers/README.md`, "Identities"). So the
//! issuing CA decides where a certificate may connect at all:
//!
//! | CA | issues | trusted by |
//! |---|---|---|
//! | fleet CA (`fleet-ca.crt`) | broker (server) certificates | every client: the agent's and the controller's `--tls-ca`, devices |
//! | node CA (`node-ca.crt`) | node certificates (CN = node name) and the controller's (CN `edgefleet-controller`) | the **cloud broker**: `cafile node-ca.crt` |
//! | device CA (`device-ca.crt`) | device certificates (CN = device id) | the **device brokers**, together with the node CA: `cafile device-broker-ca.crt` |
//!
//! A device certificate therefore cannot connect to the cloud broker (its CA is not in that broker's
//! `cafile`), whatever its name; the device broker accepts devices and the node's agent (which uses
//! its one node certificate on both links). Broker certificates come from a CA of their own so
//! that no client certificate of the fleet can pose as a broker to another client, and clients
//! trust one file whatever broker they dial.
//!
//! # Separate roots, not intermediates of one root
//!
//! Each CA is its own self-signed root. mosquitto (OpenSSL) builds a client's chain up to a
//! self-signed certificate in its `cafile`: with only an intermediate CA there, every client is
//! refused ("unable to get issuer certificate"; mosquitto 2.0 does not set
//! `X509_V_FLAG_PARTIAL_CHAIN`), and with the shared root there too, a device would reach the
//! cloud broker by sending the device intermediate along with its certificate. Separate roots make
//! a broker's `cafile` the exact list of CAs whose clients may connect.
//!
//! # Names
//!
//! Node names and device ids follow [`edgefleet_protocol::id`] (the types [`NodeId`] and
//! [`DeviceId`] enforce it). Beyond the CA split, this PKI refuses a device or node named
//! [`CONTROLLER_COMMON_NAME`], a device named like a node it issued (on that node's device broker
//! the device would get the agent's rights) and a node named like a device it issued.
//!
//! # Layout
//!
//! | file | what | goes to |
//! |---|---|---|
//! | `fleet-ca.crt`, `fleet-ca.key` | the fleet CA | `.crt`: clients' `--tls-ca` |
//! | `node-ca.crt`, `node-ca.key` | the node CA | `.crt`: the cloud broker's `cafile` |
//! | `device-ca.crt`, `device-ca.key` | the device CA | (in the bundle below) |
//! | `device-broker-ca.crt` | node CA + device CA, rewritten by [`FleetPki::init`] | the device brokers' `cafile` |
//! | `broker-<name>.crt`, `.key` | a broker's certificate | its `certfile`, `keyfile` |
//! | `controller.crt`, `.key` | the controller's certificate | its `--tls-cert`, `--tls-key` |
//! | `node-<name>.crt`, `.key` | a node's certificate | the agent's `--tls-cert`, `--tls-key` |
//! | `device-<id>.crt`, `.key` | a device's certificate | the device |
//!
//! Keys are PKCS#8 PEM, mode 0600; the folder is made mode 0700. CA files are never overwritten;
//! other certificates only when asked to (`replace`). Keep the `.key` files of the CAs somewhere
//! safe: whoever has one can issue certificates the brokers accept. This is a development PKI —
//! in production, issue from your own CAs (cert-manager, Vault) with the same split.

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use edgefleet_protocol::{DeviceId, NodeId};

use crate::{Authority, CertInfo, PkiError, TlsFiles, Validity, write_file};

/// The common name of the cloud controller's certificate (its MQTT username on the cloud broker,
/// named in `brokers/cloud/acl`).
pub const CONTROLLER_COMMON_NAME: &str = "edgefleet-controller";

/// The file of the device brokers' `cafile` bundle.
const DEVICE_BROKER_CA: &str = "device-broker-ca";

/// One of the three CAs of a [`FleetPki`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CaRole {
    /// Issues broker (server) certificates; trusted by every client.
    Fleet,
    /// Issues node and controller certificates; trusted by the cloud broker (and device brokers).
    Node,
    /// Issues device certificates; trusted by device brokers only.
    Device,
}

impl CaRole {
    /// The three roles, in the order they are made.
    pub const ALL: [CaRole; 3] = [CaRole::Fleet, CaRole::Node, CaRole::Device];

    /// The file stem: `fleet-ca`, `node-ca`, `device-ca`.
    pub fn stem(self) -> &'static str {
        match self {
            CaRole::Fleet => "fleet-ca",
            CaRole::Node => "node-ca",
            CaRole::Device => "device-ca",
        }
    }

    /// The CA's subject common name.
    pub fn common_name(self) -> &'static str {
        match self {
            CaRole::Fleet => "edgefleet fleet CA",
            CaRole::Node => "edgefleet node CA",
            CaRole::Device => "edgefleet device CA",
        }
    }

    /// What it issues, for people.
    pub fn issues(self) -> &'static str {
        match self {
            CaRole::Fleet => "broker certificates",
            CaRole::Node => "node and controller certificates",
            CaRole::Device => "device certificates",
        }
    }
}

/// Which broker a broker certificate serves: decides the CA file of its `cafile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BrokerKind {
    /// The cloud broker: nodes and the controller connect (`cafile` = the node CA).
    Cloud,
    /// A node's device broker: devices and the node's agent connect (`cafile` = node CA + device
    /// CA).
    Device,
}

/// What a certificate of a [`FleetPki`] identifies.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IssuedKind {
    /// A broker, by its host names and addresses.
    Broker,
    /// An edge node (its agent).
    Node,
    /// The cloud controller.
    Controller,
    /// A device.
    Device,
}

/// A certificate a [`FleetPki`] issued, and its files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// What it identifies.
    pub kind: IssuedKind,
    /// The subject common name (the MQTT username of a client).
    pub common_name: String,
    /// The CA that signed it.
    pub issuer: CaRole,
    /// `<stem>.crt`.
    pub cert_file: PathBuf,
    /// `<stem>.key` (mode 0600).
    pub key_file: PathBuf,
}

/// A fleet's development PKI in a folder (see the [module documentation](self)).
#[derive(Debug)]
pub struct FleetPki {
    dir: PathBuf,
    fleet: Authority,
    node: Authority,
    device: Authority,
}

impl FleetPki {
    /// Opens the PKI in `dir`, making the CAs that are missing (valid for `ca_validity`) and
    /// loading the others; returns it with the roles it made (empty: it was all there).
    ///
    /// Makes `dir` (mode 0700) if needed and rewrites `device-broker-ca.crt`. A CA whose `.crt` or
    /// `.key` is missing while the other is there is an error: it is not replaced, to not
    /// invalidate what it signed by accident.
    pub fn init(dir: &Path, ca_validity: Validity) -> Result<(FleetPki, Vec<CaRole>), PkiError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| PkiError::Io {
                action: "cannot create the folder",
                path: dir.to_owned(),
                source,
            })?;
        let mut created = Vec::new();
        let mut open = |role: CaRole| -> Result<Authority, PkiError> {
            let (cert, key) = ca_files(dir, role);
            match (cert.exists(), key.exists()) {
                (false, false) => {
                    let authority = Authority::create(role.common_name(), ca_validity)?;
                    authority.save(dir, role.stem())?;
                    created.push(role);
                    Ok(authority)
                }
                (true, false) | (false, true) => {
                    let (there, missing) = if cert.exists() {
                        (&cert, &key)
                    } else {
                        (&key, &cert)
                    };
                    Err(PkiError::BadFile {
                        path: missing.clone(),
                        reason: format!(
                            "missing while {} is there: restore it, or remove both to make a new {} (which invalidates every certificate the old one signed)",
                            there.display(),
                            role.common_name()
                        ),
                    })
                }
                (true, true) => Authority::load(&cert, &key),
            }
        };
        let pki = FleetPki {
            fleet: open(CaRole::Fleet)?,
            node: open(CaRole::Node)?,
            device: open(CaRole::Device)?,
            dir: dir.to_owned(),
        };
        pki.write_device_broker_bundle()?;
        Ok((pki, created))
    }

    /// Opens the PKI in `dir`, which [`FleetPki::init`] made.
    pub fn open(dir: &Path) -> Result<FleetPki, PkiError> {
        let missing: Vec<&str> = CaRole::ALL
            .iter()
            .filter(|role| !ca_files(dir, **role).0.exists())
            .map(|role| role.stem())
            .collect();
        if !missing.is_empty() {
            return Err(PkiError::NotInitialised {
                dir: dir.to_owned(),
                what: format!("{}.crt", missing.join(".crt, ")),
            });
        }
        let load = |role| {
            let (cert, key) = ca_files(dir, role);
            Authority::load(&cert, &key)
        };
        Ok(FleetPki {
            fleet: load(CaRole::Fleet)?,
            node: load(CaRole::Node)?,
            device: load(CaRole::Device)?,
            dir: dir.to_owned(),
        })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The CA of `role`.
    pub fn authority(&self, role: CaRole) -> &Authority {
        match role {
            CaRole::Fleet => &self.fleet,
            CaRole::Node => &self.node,
            CaRole::Device => &self.device,
        }
    }

    /// The certificate file of the CA of `role`.
    pub fn ca_file(&self, role: CaRole) -> PathBuf {
        ca_files(&self.dir, role).0
    }

    /// The `cafile` of a broker of `kind`: `node-ca.crt` for the cloud broker,
    /// `device-broker-ca.crt` (node CA + device CA) for device brokers.
    pub fn broker_ca_file(&self, kind: BrokerKind) -> PathBuf {
        match kind {
            BrokerKind::Cloud => self.ca_file(CaRole::Node),
            BrokerKind::Device => self.dir.join(format!("{DEVICE_BROKER_CA}.crt")),
        }
    }

    /// The TLS files of a client certificate: its certificate and key, and the fleet CA to verify
    /// brokers with (what the agent, the controller and devices take).
    pub fn client_tls_files(&self, issued: &Issued) -> TlsFiles {
        TlsFiles {
            ca_file: self.ca_file(CaRole::Fleet),
            cert_file: issued.cert_file.clone(),
            key_file: issued.key_file.clone(),
        }
    }

    /// The TLS files of a broker certificate serving as a broker of `kind`: its `cafile`,
    /// `certfile` and `keyfile`.
    pub fn broker_tls_files(&self, issued: &Issued, kind: BrokerKind) -> TlsFiles {
        TlsFiles {
            ca_file: self.broker_ca_file(kind),
            cert_file: issued.cert_file.clone(),
            key_file: issued.key_file.clone(),
        }
    }

    /// Issues a broker certificate for `hosts` (DNS names or IP addresses clients dial; the first is
    /// also the common name) from the fleet CA, into `broker-<name>.crt`/`.key`; `name` defaults to
    /// the first host (characters outside `[A-Za-z0-9._-]` become `_`).
    pub fn issue_broker(
        &self,
        hosts: &[&str],
        name: Option<&str>,
        validity: Validity,
        replace: bool,
    ) -> Result<Issued, PkiError> {
        let name = match name {
            Some(name) => {
                edgefleet_protocol::id::check_id(name).map_err(|source| PkiError::InvalidName {
                    what: "broker name",
                    name: name.to_owned(),
                    source,
                })?;
                name.to_owned()
            }
            None => hosts
                .first()
                .copied()
                .unwrap_or("broker")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                        c
                    } else {
                        '_'
                    }
                })
                .collect(),
        };
        let stem = format!("broker-{name}");
        self.check_replace(&stem, replace)?;
        let identity = self.fleet.server_cert_valid(hosts, validity)?;
        self.save(IssuedKind::Broker, CaRole::Fleet, &stem, &identity)
    }

    /// Issues the certificate of node `name` (CN = the node name) from the node CA, into
    /// `node-<name>.crt`/`.key`.
    pub fn issue_node(
        &self,
        name: &NodeId,
        validity: Validity,
        replace: bool,
    ) -> Result<Issued, PkiError> {
        self.check_name("node", name.as_str(), "device")?;
        let stem = format!("node-{name}");
        self.check_replace(&stem, replace)?;
        let identity = self.node.client_cert_valid(name.as_str(), validity)?;
        self.save(IssuedKind::Node, CaRole::Node, &stem, &identity)
    }

    /// Issues the controller's certificate (CN [`CONTROLLER_COMMON_NAME`]) from the node CA, into
    /// `controller.crt`/`.key`.
    pub fn issue_controller(&self, validity: Validity, replace: bool) -> Result<Issued, PkiError> {
        self.check_replace("controller", replace)?;
        let identity = self
            .node
            .client_cert_valid(CONTROLLER_COMMON_NAME, validity)?;
        self.save(
            IssuedKind::Controller,
            CaRole::Node,
            "controller",
            &identity,
        )
    }

    /// Issues the certificate of device `id` (CN = the device id) from the device CA, into
    /// `device-<id>.crt`/`.key`.
    pub fn issue_device(
        &self,
        id: &DeviceId,
        validity: Validity,
        replace: bool,
    ) -> Result<Issued, PkiError> {
        self.check_name("device", id.as_str(), "node")?;
        let stem = format!("device-{id}");
        self.check_replace(&stem, replace)?;
        let identity = self.device.client_cert_valid(id.as_str(), validity)?;
        self.save(IssuedKind::Device, CaRole::Device, &stem, &identity)
    }

    /// Every certificate file of the folder (`*.crt`, except the `device-broker-ca.crt` bundle),
    /// by file name, with what is in it.
    pub fn list(&self) -> Result<Vec<(PathBuf, CertInfo)>, PkiError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| PkiError::Io {
            action: "cannot list",
            path: self.dir.clone(),
            source,
        })?;
        let mut files = Vec::new();
        for entry in entries {
            let path = entry
                .map_err(|source| PkiError::Io {
                    action: "cannot list",
                    path: self.dir.clone(),
                    source,
                })?
                .path();
            let is_cert = path.extension().is_some_and(|ext| ext == "crt");
            let is_bundle = path
                .file_stem()
                .is_some_and(|stem| stem == DEVICE_BROKER_CA);
            if is_cert && !is_bundle {
                files.push(path);
            }
        }
        files.sort();
        let mut listed = Vec::new();
        for path in files {
            for info in CertInfo::read(&path)? {
                listed.push((path.clone(), info));
            }
        }
        Ok(listed)
    }

    fn check_name(
        &self,
        kind: &'static str,
        name: &str,
        other: &'static str,
    ) -> Result<(), PkiError> {
        if name == CONTROLLER_COMMON_NAME {
            return Err(PkiError::ReservedName {
                kind,
                name: name.to_owned(),
            });
        }
        let file = self.dir.join(format!("{other}-{name}.crt"));
        if file.exists() {
            return Err(PkiError::NameTaken {
                kind,
                name: name.to_owned(),
                other,
                file,
            });
        }
        Ok(())
    }

    fn check_replace(&self, stem: &str, replace: bool) -> Result<(), PkiError> {
        let cert = self.dir.join(format!("{stem}.crt"));
        if !replace && cert.exists() {
            return Err(PkiError::Exists {
                path: cert,
                hint: "; issue it again with --force to replace the certificate and its key",
            });
        }
        Ok(())
    }

    fn save(
        &self,
        kind: IssuedKind,
        issuer: CaRole,
        stem: &str,
        identity: &crate::Identity,
    ) -> Result<Issued, PkiError> {
        let (cert_file, key_file) = identity.save(&self.dir, stem)?;
        Ok(Issued {
            kind,
            common_name: identity.common_name().to_owned(),
            issuer,
            cert_file,
            key_file,
        })
    }

    fn write_device_broker_bundle(&self) -> Result<(), PkiError> {
        let bundle = format!(
            "# cafile of the device brokers: the node CA (agents) and the device CA (devices).\n\
             # Written by edgefleet certs init from node-ca.crt and device-ca.crt.\n{}{}",
            self.node.ca_pem(),
            self.device.ca_pem()
        );
        write_file(&self.broker_ca_file(BrokerKind::Device), &bundle, 0o644)
    }
}

fn ca_files(dir: &Path, role: CaRole) -> (PathBuf, PathBuf) {
    (
        dir.join(format!("{}.crt", role.stem())),
        dir.join(format!("{}.key", role.stem())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CertUsage;

    fn mode(path: &Path) -> u32 {
        std::os::unix::fs::PermissionsExt::mode(&fs::metadata(path).unwrap().permissions()) & 0o777
    }

    #[test]
    fn init_makes_three_roots_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("pki");
        let (pki, created) = FleetPki::init(&dir, Validity::ca()).unwrap();
        assert_eq!(created, CaRole::ALL);
        assert_eq!(mode(&dir), 0o700);
        for role in CaRole::ALL {
            let info = &CertInfo::read(&pki.ca_file(role)).unwrap()[0];
            assert_eq!(info.usage, CertUsage::Ca);
            assert_eq!(info.subject, role.common_name());
            assert_eq!(info.issuer, role.common_name(), "self-signed");
            assert_eq!(mode(&dir.join(format!("{}.key", role.stem()))), 0o600);
        }
        let bundle = CertInfo::read(&pki.broker_ca_file(BrokerKind::Device)).unwrap();
        let names: Vec<&str> = bundle.iter().map(|i| i.subject.as_str()).collect();
        assert_eq!(names, ["edgefleet node CA", "edgefleet device CA"]);
        assert_eq!(
            pki.broker_ca_file(BrokerKind::Cloud),
            pki.ca_file(CaRole::Node)
        );

        let before = fs::read(pki.ca_file(CaRole::Node)).unwrap();
        let (again, created) = FleetPki::init(&dir, Validity::ca()).unwrap();
        assert!(created.is_empty());
        assert_eq!(fs::read(again.ca_file(CaRole::Node)).unwrap(), before);

        // A CA with its key missing is not silently replaced.
        fs::remove_file(dir.join("device-ca.key")).unwrap();
        let err = FleetPki::init(&dir, Validity::ca()).unwrap_err();
        assert!(matches!(err, PkiError::BadFile { .. }), "{err}");
        assert!(
            err.to_string().contains("device-ca.key: missing while"),
            "{err}"
        );
        fs::remove_file(dir.join("device-ca.crt")).unwrap();
        let err = FleetPki::open(&dir).unwrap_err();
        assert!(err.to_string().contains("device-ca.crt"), "{err}");
        assert!(err.to_string().contains("edgefleet certs init"), "{err}");
    }

    #[test]
    fn issues_each_kind_from_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, _) = FleetPki::init(dir.path(), Validity::ca()).unwrap();
        let leaf = Validity::leaf();
        let broker = pki
            .issue_broker(&["mqtt.example.com", "10.0.0.5", "::1"], None, leaf, false)
            .unwrap();
        let node = pki
            .issue_node(&"edge-1".parse().unwrap(), leaf, false)
            .unwrap();
        let controller = pki.issue_controller(leaf, false).unwrap();
        let device = pki
            .issue_device(&"t-17".parse().unwrap(), leaf, false)
            .unwrap();

        let info = |issued: &Issued| CertInfo::read(&issued.cert_file).unwrap().remove(0);
        let b = info(&broker);
        assert_eq!(
            broker.cert_file,
            dir.path().join("broker-mqtt.example.com.crt")
        );
        assert_eq!(
            (b.usage, b.issuer.as_str()),
            (CertUsage::Server, "edgefleet fleet CA")
        );
        assert_eq!(b.dns_names, ["mqtt.example.com"]);
        assert_eq!(
            b.ip_addresses,
            [
                "10.0.0.5".parse::<std::net::IpAddr>().unwrap(),
                "::1".parse().unwrap()
            ]
        );
        let n = info(&node);
        assert_eq!(node.key_file, dir.path().join("node-edge-1.key"));
        assert_eq!(mode(&node.key_file), 0o600);
        assert_eq!((n.subject.as_str(), n.usage), ("edge-1", CertUsage::Client));
        assert_eq!(n.issuer, "edgefleet node CA");
        let c = info(&controller);
        assert_eq!(
            (c.subject.as_str(), c.issuer.as_str()),
            (CONTROLLER_COMMON_NAME, "edgefleet node CA")
        );
        let d = info(&device);
        assert_eq!(
            (d.subject.as_str(), d.issuer.as_str()),
            ("t-17", "edgefleet device CA")
        );
        assert_eq!(device.issuer, CaRole::Device);

        // The files as clients and brokers take them.
        assert_eq!(
            pki.client_tls_files(&node).ca_file,
            dir.path().join("fleet-ca.crt")
        );
        assert_eq!(
            pki.broker_tls_files(&broker, BrokerKind::Cloud).ca_file,
            dir.path().join("node-ca.crt")
        );
        pki.client_tls_files(&device).client_config().unwrap();

        let listed: Vec<String> = pki
            .list()
            .unwrap()
            .iter()
            .map(|(path, info)| {
                format!(
                    "{} {}",
                    path.file_name().unwrap().to_string_lossy(),
                    info.subject
                )
            })
            .collect();
        assert_eq!(
            listed,
            [
                "broker-mqtt.example.com.crt mqtt.example.com",
                "controller.crt edgefleet-controller",
                "device-ca.crt edgefleet device CA",
                "device-t-17.crt t-17",
                "fleet-ca.crt edgefleet fleet CA",
                "node-ca.crt edgefleet node CA",
                "node-edge-1.crt edge-1",
            ]
        );
    }

    #[test]
    fn refuses_names_that_collide_and_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let (pki, _) = FleetPki::init(dir.path(), Validity::ca()).unwrap();
        let leaf = Validity::leaf();
        let controller = CONTROLLER_COMMON_NAME.parse().unwrap();
        let err = pki.issue_device(&controller, leaf, true).unwrap_err();
        assert!(
            matches!(err, PkiError::ReservedName { kind: "device", .. }),
            "{err}"
        );
        let err = pki
            .issue_node(&controller.as_str().parse().unwrap(), leaf, true)
            .unwrap_err();
        assert!(
            matches!(err, PkiError::ReservedName { kind: "node", .. }),
            "{err}"
        );

        pki.issue_node(&"edge-1".parse().unwrap(), leaf, false)
            .unwrap();
        let err = pki
            .issue_device(&"edge-1".parse().unwrap(), leaf, true)
            .unwrap_err();
        assert!(
            matches!(
                err,
                PkiError::NameTaken {
                    kind: "device",
                    other: "node",
                    ..
                }
            ),
            "{err}"
        );
        pki.issue_device(&"t-17".parse().unwrap(), leaf, false)
            .unwrap();
        let err = pki
            .issue_node(&"t-17".parse().unwrap(), leaf, true)
            .unwrap_err();
        assert!(
            matches!(err, PkiError::NameTaken { kind: "node", .. }),
            "{err}"
        );

        let before = fs::read(dir.path().join("node-edge-1.key")).unwrap();
        let err = pki
            .issue_node(&"edge-1".parse().unwrap(), leaf, false)
            .unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        assert_eq!(
            fs::read(dir.path().join("node-edge-1.key")).unwrap(),
            before
        );
        pki.issue_node(&"edge-1".parse().unwrap(), leaf, true)
            .unwrap();
        assert_ne!(
            fs::read(dir.path().join("node-edge-1.key")).unwrap(),
            before
        );

        assert!(matches!(
            pki.issue_broker(&["h"], Some("../x"), leaf, false),
            Err(PkiError::InvalidName { .. })
        ));
        assert!(matches!(
            pki.issue_broker(&["bad host"], None, leaf, false),
            Err(PkiError::InvalidHost { .. })
        ));
        let too_long = Validity::days(Validity::CA_DAYS + 1);
        assert!(matches!(
            pki.issue_controller(too_long, true),
            Err(PkiError::OutlivesIssuer { .. })
        ));
    }
}
