//! `edgefleet-sim nodes`: a hollow fleet from the command line — the flags, progress lines while
//! it runs, and a table (or JSON) of what the nodes did when it stops.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_protocol::TrustAnchor;
use serde::Serialize;

use super::{FailVersion, Fleet, FleetOptions, NodesError, Totals};
use crate::pki::Authority;
use crate::pki::fleet::{CaRole, FleetPki};

/// Hollow edge agents on the cloud broker: real identities and signed assignments, no WasmEdge.
///
/// Each node connects with its own certificate (CN = its name, issued in memory from the node CA,
/// so the broker's ACL fences it like a real agent), verifies its signed assignments with the
/// trust anchor, fetches and verifies the modules' chunks (one copy per module is kept for the
/// whole process), reports the new version in its retained status and publishes agent events.
/// Interactions are counted, not run. Use it to try the controller, rollouts and rollbacks at
/// fleet scale.
///
/// Example: 1,000 nodes against the broker and controller of `edgefleet certs` / `edgefleet keys`,
/// failing version 3.0.0 (its canary quarantines it, so the controller rolls back):
///
///   edgefleet-sim nodes --cloud broker.example:8883 --pki ./pki --trust-anchor trust.pem \
///     --nodes 1000 --interval 10s --fail-version 3.0.0
///
/// Exit status: 0 after --duration or Ctrl-C, 2 when the fleet could not start.
#[derive(Debug, clap::Args)]
#[command(verbatim_doc_comment)]
pub struct Args {
    /// The cloud broker, HOST:PORT; its certificate must name HOST.
    #[arg(long, value_name = "HOST:PORT")]
    cloud: String,
    /// The `edgefleet certs` folder: node certificates are issued from its node CA
    /// (node-ca.crt, node-ca.key) and the broker is verified with its fleet CA (fleet-ca.crt).
    #[arg(
        long,
        value_name = "DIR",
        required_unless_present = "node_ca",
        conflicts_with_all = ["node_ca", "node_ca_key", "broker_ca"]
    )]
    pki: Option<PathBuf>,
    /// Instead of --pki: the certificate of the CA that issues node certificates (the CA the
    /// broker's cafile trusts).
    #[arg(long, value_name = "FILE", requires_all = ["node_ca_key", "broker_ca"])]
    node_ca: Option<PathBuf>,
    /// With --node-ca: its private key.
    #[arg(long, value_name = "FILE")]
    node_ca_key: Option<PathBuf>,
    /// With --node-ca: the CA(s) the broker's certificate chains to.
    #[arg(long, value_name = "FILE")]
    broker_ca: Option<PathBuf>,
    /// The controller's public key or key bundle that assignments must be signed with (what the
    /// agents take as --trust-anchor; `edgefleet keys` makes it).
    #[arg(long, value_name = "FILE")]
    trust_anchor: PathBuf,
    /// How many hollow nodes.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Node i is named PREFIX followed by i, zero-padded (hollow-00000, hollow-00001, …).
    #[arg(long, default_value = "hollow-")]
    prefix: String,
    /// Every node publishes its status once per interval, the nodes spread evenly over it
    /// (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = duration)]
    interval: Duration,
    /// Interactions each status adds to every class's active version (the rollout gate counts
    /// them).
    #[arg(long, default_value_t = 20)]
    interactions: u64,
    /// Take this many nodes offline (N, or P% of the fleet), spread over it: their connections are
    /// dropped, so the broker publishes their offline last will.
    #[arg(long, value_name = "N|P%", value_parser = share)]
    offline: Option<Share>,
    /// When to take them offline, from the start.
    #[arg(long, default_value = "30s", value_parser = duration)]
    offline_after: Duration,
    /// Bring them back after this long (default: they stay offline).
    #[arg(long, value_parser = duration)]
    offline_for: Option<Duration>,
    /// Every node running this version traps on all its interactions, quarantines it and falls
    /// back to its previous version, so a rollout's gate fails: a version (3.0.0), name@version
    /// (thermostat@3.0.0) or 12+ hex digits of the module's sha256.
    #[arg(long, value_name = "VERSION")]
    fail_version: Option<FailVersion>,
    /// Run this long, then stop the nodes and print the report (default: until Ctrl-C).
    #[arg(long, value_parser = duration)]
    duration: Option<Duration>,
    /// How often a progress line is printed (to stderr).
    #[arg(long, default_value = "5s", value_parser = duration)]
    progress: Duration,
    /// Nodes connecting at a time (TLS handshakes in flight).
    #[arg(long, default_value_t = 32)]
    connecting: usize,
    /// Print the report as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// A number of nodes, or a share of the fleet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Share {
    /// That many nodes.
    Nodes(usize),
    /// That percentage of the fleet.
    Percent(f64),
}

impl Share {
    fn of(self, nodes: usize) -> usize {
        match self {
            Share::Nodes(n) => n.min(nodes),
            Share::Percent(p) => ((nodes as f64 * p / 100.0).round() as usize).min(nodes),
        }
    }
}

fn share(text: &str) -> Result<Share, String> {
    let bad = || format!("{text:?} is neither a number of nodes (50) nor a percentage (5%)");
    match text.strip_suffix('%') {
        Some(p) => p
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|p| (0.0..=100.0).contains(p))
            .map(Share::Percent)
            .ok_or_else(bad),
        None => text.trim().parse().map(Share::Nodes).map_err(|_| bad()),
    }
}

/// `10s`, `500ms`, `2m`, or plain seconds.
fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{text:?} is not a duration: write 10s, 500ms or 2m"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("{text:?}: the unit is ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs the hollow fleet `args` describe until `--duration` or Ctrl-C, then prints the report.
pub async fn run(args: Args) -> Result<(), NodesError> {
    let (host, port) = address(&args.cloud)?;
    let (node_ca, broker_ca_pem) = certificate_authorities(&args)?;
    let trust =
        TrustAnchor::load(&args.trust_anchor).map_err(|source| NodesError::TrustAnchor {
            path: args.trust_anchor.clone(),
            source,
        })?;
    let mut options = FleetOptions::new(host, port, broker_ca_pem, node_ca, trust, args.nodes);
    options.prefix = args.prefix.clone();
    options.interval = args.interval;
    options.interactions_per_status = args.interactions;
    options.connecting_at_once = args.connecting;
    eprintln!(
        "starting {} hollow nodes ({} … {}) on {}",
        args.nodes,
        options.node_name(0),
        options.node_name(args.nodes.saturating_sub(1)),
        args.cloud
    );
    let began = Instant::now();
    let fleet = Fleet::start(options).await?;
    if let Some(version) = &args.fail_version {
        eprintln!("nodes running {version} will fail it");
        fleet.fail_version(Some(version.clone()));
    }
    let offline = args.offline.map_or(0, |s| s.of(fleet.len()));
    let offline_nodes = fleet.spread(offline);
    let offline_at = began + args.offline_after;
    let back_at = args.offline_for.map(|d| offline_at + d);
    let mut went_offline = offline_nodes.is_empty();
    let mut came_back = back_at.is_none();
    let end = args.duration.map(|d| began + d);
    let mut ticker = tokio::time::interval(args.progress.max(Duration::from_millis(100)));
    ticker.tick().await;
    let mut last = (Instant::now(), fleet.totals());
    loop {
        let next_control = [
            (!went_offline).then_some(offline_at),
            (went_offline && !came_back).then_some(back_at).flatten(),
            end,
        ]
        .into_iter()
        .flatten()
        .min();
        tokio::select! {
            _ = ticker.tick() => {
                let now = (Instant::now(), fleet.totals());
                eprintln!("{}", progress_line(&fleet, began, &last, &now));
                last = now;
            }
            _ = until(next_control) => {
                let now = Instant::now();
                if end.is_some_and(|e| now >= e) {
                    break;
                }
                if !went_offline && now >= offline_at {
                    fleet.set_online(&offline_nodes, false)?;
                    eprintln!("took {} nodes offline", offline_nodes.len());
                    went_offline = true;
                } else if !came_back && back_at.is_some_and(|b| now >= b) {
                    fleet.set_online(&offline_nodes, true)?;
                    eprintln!("brought {} nodes back online", offline_nodes.len());
                    came_back = true;
                }
            }
            _ = shutdown_signal() => {
                eprintln!("stopping");
                break;
            }
        }
    }
    let report = Report::of(&fleet, &args, began.elapsed());
    fleet.stop().await;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report is JSON")
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

async fn until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match &mut term {
                Some(term) => { term.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}

fn address(text: &str) -> Result<(String, u16), NodesError> {
    let bad = |why: &str| NodesError::Usage(format!("--cloud {text:?}: {why}"));
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("give HOST:PORT, e.g. 127.0.0.1:8883"))?;
    let port = port
        .parse()
        .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    if host.is_empty() {
        return Err(bad("it names no host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// The node CA (issuing nodes' certificates) and the broker's CA (PEM), from --pki or the files.
fn certificate_authorities(args: &Args) -> Result<(Arc<Authority>, String), NodesError> {
    let (cert, key, broker, flag) = match &args.pki {
        Some(dir) => {
            let pki = FleetPki::open(dir)
                .map_err(|e| NodesError::Usage(format!("--pki {}: {e}", dir.display())))?;
            let cert = pki.ca_file(CaRole::Node);
            let key = cert.with_extension("key");
            (cert, key, pki.ca_file(CaRole::Fleet), "--pki")
        }
        None => match (&args.node_ca, &args.node_ca_key, &args.broker_ca) {
            (Some(cert), Some(key), Some(broker)) => {
                (cert.clone(), key.clone(), broker.clone(), "--node-ca")
            }
            _ => {
                return Err(NodesError::Usage(
                    "give --pki DIR, or --node-ca, --node-ca-key and --broker-ca".into(),
                ));
            }
        },
    };
    let authority = Authority::load(&cert, &key)
        .map_err(|e| NodesError::Usage(format!("{flag}: the node CA: {e}")))?;
    let broker_ca_pem = std::fs::read_to_string(&broker).map_err(|e| {
        NodesError::Usage(format!(
            "{flag}: cannot read the broker's CA {}: {e}",
            broker.display()
        ))
    })?;
    Ok((Arc::new(authority), broker_ca_pem))
}

/// `[ 12.0 s] 9,812/10,000 connected · thermo thermostat 1.0.0 9,800 · 1,021 statuses/s · …`
fn progress_line(
    fleet: &Fleet,
    began: Instant,
    last: &(Instant, Totals),
    now: &(Instant, Totals),
) -> String {
    let (t0, a) = last;
    let (t1, b) = now;
    let seconds = t1.duration_since(*t0).as_secs_f64().max(0.001);
    let mut line = format!(
        "[{:>7.1} s] {}/{} connected",
        t1.duration_since(began).as_secs_f64(),
        thousands(b.connected),
        thousands(fleet.len() as u64)
    );
    for v in fleet.versions() {
        let _ = write!(
            line,
            " · {} {} {}: {}",
            v.class,
            v.module.name,
            v.module.version,
            thousands(v.nodes as u64)
        );
    }
    let _ = write!(
        line,
        " · {} statuses/s · {} assignments verified, {} refused · {} chunks refused · {} quarantines",
        thousands(((b.statuses - a.statuses) as f64 / seconds) as u64),
        thousands(b.assignments_verified),
        thousands(b.refused_signature + b.refused_invalid + b.refused_stale),
        thousands(b.chunks_refused),
        thousands(b.quarantines)
    );
    if b.connection_failures > a.connection_failures {
        let _ = write!(
            line,
            " · {} connection failures",
            thousands(b.connection_failures - a.connection_failures)
        );
    }
    line
}

/// What the nodes did, for the final table or JSON.
#[derive(Debug, Serialize)]
struct Report {
    nodes: usize,
    cloud: String,
    seconds: f64,
    versions: Vec<VersionRow>,
    totals: Totals,
}

#[derive(Debug, Serialize)]
struct VersionRow {
    class: String,
    module: String,
    version: String,
    sha256: String,
    nodes: usize,
}

impl Report {
    fn of(fleet: &Fleet, args: &Args, elapsed: Duration) -> Report {
        Report {
            nodes: fleet.len(),
            cloud: args.cloud.clone(),
            seconds: elapsed.as_secs_f64(),
            versions: fleet
                .versions()
                .into_iter()
                .map(|v| VersionRow {
                    class: v.class.to_string(),
                    module: v.module.name,
                    version: v.module.version,
                    sha256: v.module.sha256.short(),
                    nodes: v.nodes,
                })
                .collect(),
            totals: fleet.totals(),
        }
    }

    fn table(&self) -> String {
        let mut out = format!(
            "\n{} hollow nodes on {} for {:.0} s\n\n",
            thousands(self.nodes as u64),
            self.cloud,
            self.seconds
        );
        let mut rows: Vec<[String; 5]> = vec![[
            "CLASS".into(),
            "MODULE".into(),
            "VERSION".into(),
            "SHA256".into(),
            "NODES".into(),
        ]];
        rows.extend(self.versions.iter().map(|v| {
            [
                v.class.clone(),
                v.module.clone(),
                v.version.clone(),
                v.sha256.clone(),
                thousands(v.nodes as u64),
            ]
        }));
        if self.versions.is_empty() {
            out.push_str("No node runs a class (no assignment verified).\n");
        } else {
            out.push_str(&columns(&rows));
        }
        let t = &self.totals;
        let counts = [
            ("connections (incl. reconnections)", t.connections),
            ("connection failures", t.connection_failures),
            ("statuses published", t.statuses),
            (
                "statuses dropped (backed-up connection)",
                t.statuses_dropped,
            ),
            ("events published", t.events),
            ("assignments verified and taken", t.assignments_verified),
            ("assignments refused: signature", t.refused_signature),
            (
                "assignments refused: wrong node/class, invalid",
                t.refused_invalid,
            ),
            ("assignments refused: stale generation", t.refused_stale),
            ("chunks verified", t.chunks_verified),
            ("chunks refused", t.chunks_refused),
            ("modules verified (per node)", t.modules_verified),
            ("modules held (once per process)", t.modules_held),
            ("interactions counted", t.interactions),
            ("of which faults", t.faults),
            ("versions quarantined", t.quarantines),
        ];
        let mut rows: Vec<[String; 2]> = vec![["WHAT".into(), "COUNT".into()]];
        rows.extend(
            counts
                .iter()
                .map(|(what, n)| [what.to_string(), thousands(*n)]),
        );
        out.push('\n');
        out.push_str(&columns(&rows));
        out
    }
}

/// Left-aligned text columns, numbers (the last column) right-aligned.
fn columns<const N: usize>(rows: &[[String; N]]) -> String {
    let widths: Vec<usize> = (0..N)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == N {
                let _ = writeln!(out, "{cell:>width$}", width = widths[i]);
            } else {
                let _ = write!(out, "{cell:<width$}  ", width = widths[i]);
            }
        }
    }
    out
}

/// 12345 → "12,345".
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse() {
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(duration("3"), Ok(Duration::from_secs(3)));
        assert!(duration("soon").is_err() && duration("3 days").is_err());
        assert_eq!(share("5%").unwrap().of(200), 10);
        assert_eq!(share("50").unwrap().of(20), 20);
        assert!(share("150%").is_err() && share("a few").is_err());
        assert_eq!(
            address("127.0.0.1:8883").unwrap(),
            ("127.0.0.1".into(), 8883)
        );
        assert!(address("localhost").is_err() && address(":1").is_err());
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
    }
}
