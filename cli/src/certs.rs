//! `edgefleet certs`: the development PKI of [`edgefleet_pki::FleetPki`] from the command line —
//! its three CAs, broker, node, controller and device certificates in one folder, and which
//! broker trusts which CA.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use edgefleet_pki::{
    BrokerKind, CaRole, CertInfo, FleetPki, Issued, IssuedKind, Validity, rfc3339,
};
use edgefleet_protocol::{DeviceId, NodeId};
use serde::Serialize;

use crate::Error;
use crate::output::{self, Format, Row};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # The CAs (also made by the first `certs issue`)
  edgefleet certs init --dir ./pki

  # The cloud broker's certificate, for the names and addresses clients dial
  edgefleet certs issue broker --host mqtt.example.com --host 10.0.0.5

  # A node's agent, the controller, a device
  edgefleet certs issue node edge-1
  edgefleet certs issue controller
  edgefleet certs issue device t-17

  # What is there
  edgefleet certs list -o yaml";

/// Arguments of `edgefleet certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    #[command(subcommand)]
    command: CertsCommand,
}

#[derive(Debug, Subcommand)]
enum CertsCommand {
    /// Make the PKI's three CAs (fleet, node, device) in the folder; keeps those already there.
    ///
    /// The fleet CA issues broker certificates and every client trusts it (its --tls-ca); the
    /// node CA issues node and controller certificates and is the cloud broker's cafile; the
    /// device CA issues device certificates, and the device brokers' cafile is
    /// device-broker-ca.crt (node CA + device CA). Each is a self-signed root: a broker trusts
    /// exactly the CAs in its cafile, so no device certificate connects to the cloud broker. The
    /// `.key` files are what lets anyone issue certificates the brokers accept: keep them safe.
    /// `certs issue` runs this by itself on first use.
    #[command(after_long_help = "\
Examples:
  edgefleet certs init --dir ./pki
  edgefleet certs init --dir ./pki --days 730")]
    Init(InitArgs),
    /// Issue a broker, node, controller or device certificate.
    ///
    /// Writes <stem>.crt and <stem>.key (mode 0600) into the folder and prints where they go and
    /// which broker accepts them. Refuses to replace an existing certificate unless --force (a
    /// new key each time).
    #[command(
        subcommand,
        after_long_help = "\
Examples:
  edgefleet certs issue broker --host mqtt.example.com
  edgefleet certs issue node edge-1 --days 90"
    )]
    Issue(IssueCommand),
    /// List the certificates of the folder: file, subject, kind, issuer, expiry, host names.
    ///
    /// Every *.crt file except the device-broker-ca.crt bundle (the node and device CAs, listed
    /// on their own).
    #[command(after_long_help = "\
Examples:
  edgefleet certs list
  edgefleet certs list --dir ./pki -o json")]
    List(ListArgs),
}

#[derive(Debug, Subcommand)]
enum IssueCommand {
    /// A broker's server certificate, from the fleet CA, naming the hosts clients dial.
    ///
    /// Every --host (a DNS name or an IP address) becomes a subject alternative name; clients
    /// check the address they dial against them (dialling 10.0.0.5 needs --host 10.0.0.5). The
    /// files are broker-<name>.crt/.key, for mosquitto's certfile and keyfile; its cafile decides
    /// who may connect: node-ca.crt on the cloud broker, device-broker-ca.crt on device brokers.
    #[command(after_long_help = "\
Examples:
  # The cloud broker
  edgefleet certs issue broker --host mqtt.example.com --name cloud
  # A node's device broker, dialled by name and address
  edgefleet certs issue broker --host devices.edge-1.local --host 192.168.1.10 --name edge-1-devices")]
    Broker(BrokerArgs),
    /// A node's certificate (CN = the node name), from the node CA.
    ///
    /// The node's agent uses it on both of its links (--tls-cert, --tls-key): the cloud broker
    /// and the node's device broker accept it, and their ACLs give it that node's rights. NAME is
    /// the Kubernetes node name, the agent's --node-name. Refused: `edgefleet-controller`, and a
    /// name this PKI has issued a device certificate for.
    #[command(after_long_help = "\
Examples:
  edgefleet certs issue node edge-1")]
    Node(NodeArgs),
    /// The cloud controller's certificate (CN edgefleet-controller), from the node CA.
    ///
    /// The cloud broker accepts it and its ACL gives `edgefleet-controller` the controller's
    /// rights (publish assignments and module chunks, read every node's status); the controller
    /// takes it as --tls-cert and --tls-key.
    #[command(after_long_help = "\
Examples:
  edgefleet certs issue controller")]
    Controller(ControllerArgs),
    /// A device's certificate (CN = the device id), from the device CA.
    ///
    /// Only device brokers accept it (their cafile has the device CA); the cloud broker refuses
    /// it during the TLS handshake. Refused: `edgefleet-controller`, and a name this PKI has
    /// issued a node certificate for (a device named like a node would get that node's agent
    /// rights on its device broker).
    #[command(after_long_help = "\
Examples:
  edgefleet certs issue device t-17")]
    Device(DeviceArgs),
}

/// Where the PKI is.
#[derive(Debug, Args)]
struct DirArg {
    /// The PKI folder (made with mode 0700 if missing).
    #[arg(
        long,
        value_name = "DIR",
        env = "EDGEFLEET_PKI_DIR",
        default_value = "pki"
    )]
    dir: PathBuf,
}

#[derive(Debug, Args)]
struct InitArgs {
    #[command(flatten)]
    dir: DirArg,
    /// How long the CAs are valid, in days.
    #[arg(long, default_value_t = Validity::CA_DAYS, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    days: u32,
}

/// What every `certs issue` takes.
#[derive(Debug, Args)]
struct IssueOptions {
    #[command(flatten)]
    dir: DirArg,
    /// How long the certificate is valid, in days (at most as long as its CA).
    #[arg(long, default_value_t = Validity::LEAF_DAYS, value_parser = clap::value_parser!(u32).range(1..=36_500))]
    days: u32,
    /// Replace an existing certificate of that name (and its key).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct BrokerArgs {
    /// A DNS name or IP address clients dial (repeat for several; the first is also the CN).
    #[arg(long = "host", value_name = "HOST", required = true)]
    hosts: Vec<String>,
    /// The file stem: broker-<NAME>.crt (default: the first host).
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    options: IssueOptions,
}

#[derive(Debug, Args)]
struct NodeArgs {
    /// The node name (1–64 of A-Z a-z 0-9 . _ -, not starting with '.').
    #[arg(value_name = "NAME")]
    name: NodeId,
    #[command(flatten)]
    options: IssueOptions,
}

#[derive(Debug, Args)]
struct ControllerArgs {
    #[command(flatten)]
    options: IssueOptions,
}

#[derive(Debug, Args)]
struct DeviceArgs {
    /// The device id (1–64 of A-Z a-z 0-9 . _ -, not starting with '.').
    #[arg(value_name = "ID")]
    id: DeviceId,
    #[command(flatten)]
    options: IssueOptions,
}

#[derive(Debug, Args)]
struct ListArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: Format,
}

/// Runs `edgefleet certs …`.
pub fn run(args: CertsArgs) -> Result<(), Error> {
    match args.command {
        CertsCommand::Init(args) => init(args),
        CertsCommand::Issue(command) => issue(command),
        CertsCommand::List(args) => list(args),
    }
}

fn init(args: InitArgs) -> Result<(), Error> {
    let (pki, created) = FleetPki::init(&args.dir.dir, Validity::days(args.days))?;
    if created.is_empty() {
        println!(
            "The CAs in {} exist already; nothing changed.",
            pki.dir().display()
        );
    } else {
        print_created(&pki, &created);
    }
    println!();
    print_trust(&pki);
    Ok(())
}

/// Opens the PKI of `options`, making its CAs on first use.
fn open(options: &IssueOptions) -> Result<FleetPki, Error> {
    let (pki, created) = FleetPki::init(&options.dir.dir, Validity::ca())?;
    if !created.is_empty() {
        print_created(&pki, &created);
        println!();
    }
    Ok(pki)
}

fn issue(command: IssueCommand) -> Result<(), Error> {
    match command {
        IssueCommand::Broker(args) => {
            let pki = open(&args.options)?;
            let hosts: Vec<&str> = args.hosts.iter().map(String::as_str).collect();
            let issued = pki.issue_broker(
                &hosts,
                args.name.as_deref(),
                Validity::days(args.options.days),
                args.options.force,
            )?;
            print_issued(&pki, &issued)
        }
        IssueCommand::Node(args) => {
            let pki = open(&args.options)?;
            let issued = pki.issue_node(
                &args.name,
                Validity::days(args.options.days),
                args.options.force,
            )?;
            print_issued(&pki, &issued)
        }
        IssueCommand::Controller(args) => {
            let pki = open(&args.options)?;
            let issued =
                pki.issue_controller(Validity::days(args.options.days), args.options.force)?;
            print_issued(&pki, &issued)
        }
        IssueCommand::Device(args) => {
            let pki = open(&args.options)?;
            let issued = pki.issue_device(
                &args.id,
                Validity::days(args.options.days),
                args.options.force,
            )?;
            print_issued(&pki, &issued)
        }
    }
}

fn print_created(pki: &FleetPki, created: &[CaRole]) {
    println!(
        "Made the CAs in {} (keep the .key files safe):",
        pki.dir().display()
    );
    let rows = created.iter().map(|role| {
        vec![
            pki.ca_file(*role).display().to_string(),
            role.common_name().to_owned(),
            format!("issues {}", role.issues()),
        ]
    });
    print!(
        "{}",
        output::indent(&output::table(&["FILE", "CA", "WHAT"], rows))
    );
}

/// Which broker trusts which CA, and what clients trust.
fn print_trust(pki: &FleetPki) {
    println!("Which CA each side trusts:");
    let rows = [
        vec![
            "cloud broker".to_owned(),
            format!("cafile {}", pki.broker_ca_file(BrokerKind::Cloud).display()),
            "nodes and the controller; no device certificate connects".to_owned(),
        ],
        vec![
            "device brokers".to_owned(),
            format!(
                "cafile {}",
                pki.broker_ca_file(BrokerKind::Device).display()
            ),
            "devices, and the node's agent".to_owned(),
        ],
        vec![
            "agents, controller, devices".to_owned(),
            format!("--tls-ca {}", pki.ca_file(CaRole::Fleet).display()),
            "verify the brokers' certificates".to_owned(),
        ],
    ];
    print!(
        "{}",
        output::indent(&output::table(
            &["WHO", "TRUSTS", "ACCEPTS"],
            rows.into_iter()
        ))
    );
}

fn print_issued(pki: &FleetPki, issued: &Issued) -> Result<(), Error> {
    let info = CertInfo::read(&issued.cert_file)?.remove(0);
    let what = match issued.kind {
        IssuedKind::Broker => {
            let mut names = info.dns_names.clone();
            names.extend(info.ip_addresses.iter().map(ToString::to_string));
            format!("broker certificate for {}", names.join(", "))
        }
        IssuedKind::Node => format!("node certificate for {}", issued.common_name),
        IssuedKind::Controller => "the controller's certificate".to_owned(),
        IssuedKind::Device => format!("device certificate for {}", issued.common_name),
    };
    println!(
        "Issued {what} (CN {}, from the {}, valid until {})",
        issued.common_name,
        issued.issuer.common_name().trim_start_matches("edgefleet "),
        rfc3339(info.not_after)
    );
    let file = |path: &PathBuf| path.display().to_string();
    let fleet_ca = file(&pki.ca_file(CaRole::Fleet));
    let cloud_ca = file(&pki.broker_ca_file(BrokerKind::Cloud));
    let device_ca = file(&pki.broker_ca_file(BrokerKind::Device));
    let (rows, accepted) = match issued.kind {
        IssuedKind::Broker => (
            vec![
                vec![file(&issued.cert_file), "mosquitto certfile".to_owned()],
                vec![
                    file(&issued.key_file),
                    "mosquitto keyfile (mode 0600)".to_owned(),
                ],
                vec![
                    cloud_ca,
                    "cafile, as the cloud broker (nodes and the controller may connect)".to_owned(),
                ],
                vec![
                    device_ca,
                    "cafile, as a device broker (devices and the node's agent may connect)"
                        .to_owned(),
                ],
            ],
            format!("Clients verify it with {fleet_ca} (their --tls-ca)."),
        ),
        IssuedKind::Node => (
            vec![
                vec![file(&issued.cert_file), "the agent's --tls-cert".to_owned()],
                vec![
                    file(&issued.key_file),
                    "the agent's --tls-key (mode 0600)".to_owned(),
                ],
                vec![
                    fleet_ca,
                    "the agent's --tls-ca (verifies both brokers)".to_owned(),
                ],
            ],
            format!(
                "Accepted by the cloud broker (cafile {cloud_ca}) and the node's device broker (cafile {device_ca}); the agent's --node-name is {}.",
                issued.common_name
            ),
        ),
        IssuedKind::Controller => (
            vec![
                vec![
                    file(&issued.cert_file),
                    "the controller's --tls-cert".to_owned(),
                ],
                vec![
                    file(&issued.key_file),
                    "the controller's --tls-key (mode 0600)".to_owned(),
                ],
                vec![fleet_ca, "the controller's --tls-ca".to_owned()],
            ],
            format!(
                "Accepted by the cloud broker (cafile {cloud_ca}), whose ACL gives edgefleet-controller the controller's rights."
            ),
        ),
        IssuedKind::Device => (
            vec![
                vec![
                    file(&issued.cert_file),
                    "the device's certificate".to_owned(),
                ],
                vec![
                    file(&issued.key_file),
                    "the device's private key (mode 0600)".to_owned(),
                ],
                vec![fleet_ca, "the device's CA, to verify its broker".to_owned()],
            ],
            format!(
                "Accepted by device brokers only (cafile {device_ca}); the cloud broker (cafile {cloud_ca}) refuses it."
            ),
        ),
    };
    print!(
        "{}",
        output::indent(&output::table(&["FILE", "USE"], rows.into_iter()))
    );
    println!("{accepted}");
    Ok(())
}

/// One line of `certs list`.
#[derive(Debug, Serialize)]
struct CertRow {
    file: String,
    subject: String,
    kind: &'static str,
    issuer: String,
    not_before: String,
    not_after: String,
    dns_names: Vec<String>,
    ip_addresses: Vec<String>,
}

impl Row for CertRow {
    const HEADERS: &'static [&'static str] =
        &["FILE", "SUBJECT", "KIND", "ISSUER", "NOT AFTER", "HOSTS"];
    fn cells(&self) -> Vec<String> {
        let mut hosts = self.dns_names.clone();
        hosts.extend(self.ip_addresses.iter().cloned());
        vec![
            self.file.clone(),
            self.subject.clone(),
            self.kind.to_owned(),
            self.issuer.clone(),
            self.not_after.clone(),
            if hosts.is_empty() {
                "-".to_owned()
            } else {
                hosts.join(",")
            },
        ]
    }
}

fn list(args: ListArgs) -> Result<(), Error> {
    let pki = FleetPki::open(&args.dir.dir)?;
    let rows: Vec<CertRow> = pki
        .list()?
        .into_iter()
        .map(|(path, info)| CertRow {
            file: path.display().to_string(),
            subject: info.subject,
            kind: info.usage.as_str(),
            issuer: info.issuer,
            not_before: rfc3339(info.not_before),
            not_after: rfc3339(info.not_after),
            dns_names: info.dns_names,
            ip_addresses: info.ip_addresses.iter().map(ToString::to_string).collect(),
        })
        .collect();
    output::print(&rows, args.output)
}
