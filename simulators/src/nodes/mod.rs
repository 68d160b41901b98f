//! The node simulator: hundreds to tens of thousands of **hollow edge agents** on the cloud broker,
//! to exercise the controller, its rollouts and rollbacks at fleet scale without a WasmEdge
//! process per node (`edgefleet-sim nodes`, the controller's fleet benchmark, `hollow.rs`).
//!
//! A hollow node is everything an agent is to the cloud, and nothing it is to devices:
//!
//! - **Its own identity**: a node certificate (CN = node name) issued in memory from the node CA,
//!   one MQTT connection per node, so the shipped cloud ACL fences it exactly like a real agent
//!   (it can read only its own assignments and write only its own status and events). See [`link`].
//! - **Real assignments**: it subscribes `ef/v1/node/<node>/assign/+`, verifies every signed
//!   assignment with the trust anchor (the agent's `--trust-anchor` file), checks node, class,
//!   validity and generation, fetches the module's chunks and checks each against the signed
//!   manifest, and the blob against its sha256. See [`node`].
//! - **Modules held once per process**: each node receives and checks its chunks, but the bytes go
//!   into one shared copy per module ([`modules`]); 10,000 nodes on one module hold it once.
//! - **Its status and events**: the retained `NodeStatus` (active version, the previous one kept,
//!   generation, rollout step, per-version counters, pending downloads, the last error) every
//!   interval, the nodes spread evenly over it, and agent events (`AssignmentApplied`,
//!   `AssignmentRejected`, `ModuleRefused`, `ClassWithdrawn`, `InteractionFailed`,
//!   `ModuleQuarantined`, `RolledBack`). Interactions are counted, not run: each status adds
//!   [`FleetOptions::interactions_per_status`] to every class's active version.
//! - **Controls**: [`Fleet::set_online`] drops nodes' connections (the broker publishes their
//!   offline last will) and brings them back; [`Fleet::fail_version`] makes every node running
//!   that version trap on all its interactions, quarantine it and fall back to the previous
//!   version, as agents do — so a rollout's gate fails on it and the controller rolls back.
//! - **Observations** for tests and benchmarks: [`Fleet::observe`] (per node: connected, the
//!   active versions, each assignment with when it arrived, became active and was reported),
//!   [`Fleet::versions`], [`Fleet::totals`].
//!
//! One process with 10,000 nodes holds 10,000 TLS connections: [`Fleet::start`] raises the soft
//! `RLIMIT_NOFILE` to the hard limit and refuses to start when even that is too low; mosquitto
//! needs as many descriptors (it inherits the limit of whoever starts it).

mod cli;
mod link;
mod modules;
mod node;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use edgefleet_protocol::{ClassId, ModuleRef, NodeId, TrustAnchor, codec};
use rumqttc::{AsyncClient, QoS};
use serde::Serialize;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::broker::Broker;
use crate::pki::{Authority, PkiError};

pub use cli::{Args, run};
pub use node::{Assigned, FailVersion, FailVersionError};

use modules::Modules;
use node::{Context, Hollow};

/// Open files a process needs besides its nodes' connections.
const SPARE_FILES: u64 = 256;

/// How a hollow fleet is set up.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    /// The cloud broker's host name or address; its certificate must name it.
    pub host: String,
    /// The cloud broker's port.
    pub port: u16,
    /// The CA(s) the broker's certificate chains to (PEM): the fleet CA of `edgefleet certs`.
    pub broker_ca_pem: String,
    /// The node CA, which issues every node's certificate (in memory).
    pub node_ca: Arc<Authority>,
    /// The keys assignments must be signed with (the agents' `--trust-anchor`).
    pub trust: TrustAnchor,
    /// How many nodes.
    pub nodes: usize,
    /// Node `i` is named `<prefix><i>`, `i` zero-padded to at least 5 digits.
    pub prefix: String,
    /// Every node publishes its status once per interval, the nodes spread evenly over it.
    pub interval: Duration,
    /// Interactions each status adds to every class's active version.
    pub interactions_per_status: u64,
    /// Nodes connecting (TLS handshake, CONNECT) at a time.
    pub connecting_at_once: usize,
}

impl FleetOptions {
    /// `nodes` nodes named `hollow-00000`…, reporting every 10 s with 20 interactions per status.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        broker_ca_pem: String,
        node_ca: Arc<Authority>,
        trust: TrustAnchor,
        nodes: usize,
    ) -> FleetOptions {
        FleetOptions {
            host: host.into(),
            port,
            broker_ca_pem,
            node_ca,
            trust,
            nodes,
            prefix: "hollow-".into(),
            interval: Duration::from_secs(10),
            interactions_per_status: 20,
            connecting_at_once: 32,
        }
    }

    /// Options for a test broker ([`Broker::mutual_tls`], [`Broker::with_options`] with a
    /// test-time authority), whose authority issues the nodes' certificates and signed the
    /// broker's.
    pub fn for_broker(
        broker: &Broker,
        trust: TrustAnchor,
        nodes: usize,
    ) -> Result<FleetOptions, NodesError> {
        let authority = broker.authority().ok_or(NodesError::NoAuthority)?;
        Ok(FleetOptions::new(
            broker.host(),
            broker.port(),
            authority.ca_pem(),
            authority.clone(),
            trust,
            nodes,
        ))
    }

    /// The name of node `i`.
    pub fn node_name(&self, i: usize) -> String {
        let width = self.nodes.saturating_sub(1).to_string().len().max(5);
        format!("{}{i:0width$}", self.prefix)
    }
}

/// Why a hollow fleet cannot start.
#[derive(Debug, thiserror::Error)]
pub enum NodesError {
    /// Zero nodes asked for.
    #[error("no nodes to simulate: ask for at least one")]
    NoNodes,
    /// A node name is not a valid node id.
    #[error(
        "node name {name:?} is not valid ({reason}): use a --prefix of letters, digits, '.', '_' and '-', at most {} characters",
        64 - 5
    )]
    BadName {
        /// The name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The name is the controller's.
    #[error("node name {0:?} is the controller's certificate name: choose another --prefix")]
    ControllerName(String),
    /// Not enough file descriptors for the connections.
    #[error(
        "{nodes} hollow nodes need about {needed} open files, but this process may open at most {limit} (the hard RLIMIT_NOFILE): raise it (`ulimit -Hn`, LimitNOFILE= in a unit) or run fewer nodes"
    )]
    TooManyFiles {
        /// Nodes asked for.
        nodes: usize,
        /// Files needed.
        needed: u64,
        /// The hard limit.
        limit: u64,
    },
    /// The limit could not be read or raised.
    #[error("cannot raise the open-files limit to {wanted}: {source}")]
    FileLimit {
        /// The limit wanted.
        wanted: u64,
        /// The OS error.
        source: std::io::Error,
    },
    /// A certificate or TLS configuration could not be made.
    #[error("cannot make a node's TLS identity: {0}")]
    Pki(#[from] PkiError),
    /// No node could connect to the broker.
    #[error("{0}")]
    Unreachable(String),
    /// No connection succeeded within the start deadline.
    #[error(
        "no hollow node connected to the cloud broker at {address} within {waited:?}: is it overloaded, or is the address right?"
    )]
    NoConnection {
        /// host:port.
        address: String,
        /// How long it was given.
        waited: Duration,
    },
    /// Options for a test broker without a test-time authority.
    #[error(
        "this broker has no test-time authority: build FleetOptions::new with its CA and the node CA"
    )]
    NoAuthority,
    /// A flag that cannot work.
    #[error("{0}")]
    Usage(String),
    /// The trust anchor file cannot be read.
    #[error("--trust-anchor {}: {source} (give the controller's public key or bundle, as for the agents)", path.display())]
    TrustAnchor {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: edgefleet_protocol::signing::KeyError,
    },
    /// A node named that is not in the fleet.
    #[error("no hollow node named {0}")]
    UnknownNode(NodeId),
}

/// Fleet-wide counts since the fleet started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    /// Nodes connected now.
    pub connected: u64,
    /// Successful connections (first ones and reconnections).
    pub connections: u64,
    /// Connection attempts that failed.
    pub connection_failures: u64,
    /// Statuses published.
    pub statuses: u64,
    /// Statuses not published because the node's connection was backed up.
    pub statuses_dropped: u64,
    /// Events published.
    pub events: u64,
    /// Events dropped (backed-up connection).
    pub events_dropped: u64,
    /// Assignments that verified and were taken (redeliveries of the current one not counted).
    pub assignments_verified: u64,
    /// Assignments refused: not signed, or not by a trusted key.
    pub refused_signature: u64,
    /// Assignments refused: another node's or class's, or invalid.
    pub refused_invalid: u64,
    /// Assignments refused: older than the applied generation (replays).
    pub refused_stale: u64,
    /// Chunks that matched their digest.
    pub chunks_verified: u64,
    /// Chunks that did not.
    pub chunks_refused: u64,
    /// Modules fetched and verified, counted per node.
    pub modules_verified: u64,
    /// Refusals of a module for a class waiting for it (a bad chunk or blob).
    pub modules_refused: u64,
    /// Distinct modules held (verified), once per process.
    pub modules_held: u64,
    /// Their bytes.
    pub module_bytes_held: u64,
    /// Interactions counted on active versions.
    pub interactions: u64,
    /// Of which faults (a failing version).
    pub faults: u64,
    /// Versions quarantined by a node.
    pub quarantines: u64,
}

/// The counters behind [`Totals`].
#[derive(Default)]
struct Counters {
    connected: AtomicU64,
    connections: AtomicU64,
    connection_failures: AtomicU64,
    statuses: AtomicU64,
    statuses_dropped: AtomicU64,
    events: AtomicU64,
    events_dropped: AtomicU64,
    assignments_verified: AtomicU64,
    refused_signature: AtomicU64,
    refused_invalid: AtomicU64,
    refused_stale: AtomicU64,
    chunks_verified: AtomicU64,
    chunks_refused: AtomicU64,
    modules_verified: AtomicU64,
    modules_refused: AtomicU64,
    interactions: AtomicU64,
    faults: AtomicU64,
    quarantines: AtomicU64,
}

fn count(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn totals(&self) -> Totals {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Totals {
            connected: get(&self.connected),
            connections: get(&self.connections),
            connection_failures: get(&self.connection_failures),
            statuses: get(&self.statuses),
            statuses_dropped: get(&self.statuses_dropped),
            events: get(&self.events),
            events_dropped: get(&self.events_dropped),
            assignments_verified: get(&self.assignments_verified),
            refused_signature: get(&self.refused_signature),
            refused_invalid: get(&self.refused_invalid),
            refused_stale: get(&self.refused_stale),
            chunks_verified: get(&self.chunks_verified),
            chunks_refused: get(&self.chunks_refused),
            modules_verified: get(&self.modules_verified),
            modules_refused: get(&self.modules_refused),
            modules_held: 0,
            module_bytes_held: 0,
            interactions: get(&self.interactions),
            faults: get(&self.faults),
            quarantines: get(&self.quarantines),
        }
    }
}

/// One node as [`Fleet::observe`] saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeView {
    /// The node.
    pub node: NodeId,
    /// Connected now.
    pub connected: bool,
    /// When it first connected (ms since the UNIX epoch).
    pub first_connected_at_ms: Option<u64>,
    /// Every class's active version.
    pub active: Vec<(ClassId, ModuleRef)>,
    /// The assignments it took, newest last (the latest 32).
    pub assignments: Vec<Assigned>,
    /// Assignments and modules it refused.
    pub refused: u64,
}

/// How many nodes run one version of a class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Running {
    /// The class.
    pub class: ClassId,
    /// The version.
    pub module: ModuleRef,
    /// Nodes with it active.
    pub nodes: usize,
}

/// One node's place in the fleet.
struct Slot {
    index: usize,
    node: NodeId,
    hollow: Mutex<Hollow>,
    /// The client while connected (the status schedule publishes through it).
    client: Mutex<Option<AsyncClient>>,
    /// Whether it should be connected.
    online: watch::Sender<bool>,
    first_connected_at_ms: OnceLock<u64>,
    tls: OnceLock<Arc<rustls::ClientConfig>>,
}

impl Slot {
    /// Its TLS configuration: a certificate issued for it at its first connection.
    fn tls(&self, shared: &Shared) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        if let Some(tls) = self.tls.get() {
            return Ok(tls.clone());
        }
        let identity = shared.node_ca.client_cert(self.node.as_str())?;
        let config = edgefleet_protocol::tls::client_config_from_pem(
            shared.broker_ca_pem.as_bytes(),
            identity.cert_pem().as_bytes(),
            identity.key_pem().as_bytes(),
        )?;
        Ok(self.tls.get_or_init(|| Arc::new(config)).clone())
    }

    fn connected(&self, shared: &Shared, client: AsyncClient) {
        let now = now_ms();
        let first = self.first_connected_at_ms.set(now).is_ok();
        self.hollow.lock().unwrap().connected(now, first);
        *self.client.lock().unwrap() = Some(client);
        count(&shared.counters.connected, 1);
        count(&shared.counters.connections, 1);
        shared.progress.send_modify(|p| p.connections += 1);
        // Like an agent that (re)connects: its status at once.
        publish_status(self, shared);
    }

    fn disconnected(&self, shared: &Shared) {
        if self.client.lock().unwrap().take().is_some() {
            shared.counters.connected.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// How the first connections went (what [`Fleet::start`] waits for).
#[derive(Default, Clone)]
struct Progress {
    connections: u64,
    failures: u64,
    last_error: Option<String>,
}

/// What every node task shares.
struct Shared {
    host: String,
    port: u16,
    broker_ca_pem: String,
    node_ca: Arc<Authority>,
    trust: TrustAnchor,
    interval: Duration,
    interactions_per_status: u64,
    slots: Vec<Arc<Slot>>,
    modules: Modules,
    counters: Counters,
    failing: RwLock<Option<FailVersion>>,
    connecting: Semaphore,
    progress: watch::Sender<Progress>,
}

impl Shared {
    fn context<'a>(&'a self, failing: Option<&'a FailVersion>) -> Context<'a> {
        Context {
            trust: &self.trust,
            modules: &self.modules,
            counters: &self.counters,
            failing,
            interactions_per_status: self.interactions_per_status,
            now_ms: now_ms(),
        }
    }

    fn failed(&self, message: String) {
        count(&self.counters.connection_failures, 1);
        tracing::debug!("{message}");
        self.progress.send_modify(|p| {
            p.failures += 1;
            p.last_error = Some(message);
        });
    }
}

/// A running hollow fleet. Dropping it ends every node at once (their last wills then say
/// offline); [`Fleet::stop`] shuts them down like agents.
pub struct Fleet {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Fleet {
    /// Starts every node and returns once the first has connected (the others keep connecting,
    /// [`FleetOptions::connecting_at_once`] at a time). Fails at once on options that cannot
    /// work, and when no node can connect (with what to check).
    pub async fn start(options: FleetOptions) -> Result<Fleet, NodesError> {
        if options.nodes == 0 {
            return Err(NodesError::NoNodes);
        }
        let mut names = Vec::with_capacity(options.nodes);
        for i in 0..options.nodes {
            let name = options.node_name(i);
            if name == crate::pki::fleet::CONTROLLER_COMMON_NAME {
                return Err(NodesError::ControllerName(name));
            }
            let node = NodeId::new(&name).map_err(|e| NodesError::BadName {
                reason: e.to_string(),
                name,
            })?;
            names.push(node);
        }
        raise_open_files(options.nodes)?;
        edgefleet_protocol::tls::install_crypto_provider();
        let started = now_ms();
        let slots: Vec<Arc<Slot>> = names
            .into_iter()
            .enumerate()
            .map(|(index, node)| {
                Arc::new(Slot {
                    index,
                    hollow: Mutex::new(Hollow::new(node.clone(), started)),
                    node,
                    client: Mutex::new(None),
                    online: watch::channel(true).0,
                    first_connected_at_ms: OnceLock::new(),
                    tls: OnceLock::new(),
                })
            })
            .collect();
        let shared = Arc::new(Shared {
            host: options.host,
            port: options.port,
            broker_ca_pem: options.broker_ca_pem,
            node_ca: options.node_ca,
            trust: options.trust,
            interval: options.interval.max(Duration::from_millis(10)),
            interactions_per_status: options.interactions_per_status,
            slots,
            modules: Modules::default(),
            counters: Counters::default(),
            failing: RwLock::new(None),
            connecting: Semaphore::new(options.connecting_at_once.max(1)),
            progress: watch::channel(Progress::default()).0,
        });
        // Bad CA or key material is everyone's problem: say so before anything connects.
        shared.slots[0].tls(&shared)?;
        let (stop, stopped) = watch::channel(false);
        let mut progress = shared.progress.subscribe();
        let mut tasks: Vec<JoinHandle<()>> = shared
            .slots
            .iter()
            .map(|slot| tokio::spawn(link::run(slot.clone(), shared.clone(), stopped.clone())))
            .collect();
        tasks.push(tokio::spawn(schedule_statuses(shared.clone(), stopped)));
        let fleet = Fleet {
            shared,
            stop,
            tasks,
        };
        // The first connections tell whether the broker is there at all.
        let attempts = fleet.shared.slots.len().min(3) as u64;
        let waited = Duration::from_secs(30);
        // Cloned at once: the watch's lock must not be held while nodes report.
        let outcome = tokio::time::timeout(
            waited,
            progress.wait_for(|p| p.connections > 0 || p.failures >= attempts),
        )
        .await
        .map(|seen| seen.map(|p| p.clone()));
        let address = format!("{}:{}", fleet.shared.host, fleet.shared.port);
        match outcome {
            Ok(Ok(p)) if p.connections > 0 => Ok(fleet),
            Ok(Ok(p)) => {
                fleet.stop().await;
                Err(NodesError::Unreachable(p.last_error.unwrap_or_default()))
            }
            _ => {
                fleet.stop().await;
                Err(NodesError::NoConnection { address, waited })
            }
        }
    }

    /// The nodes' names, in order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeId> {
        self.shared.slots.iter().map(|s| &s.node)
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.shared.slots.len()
    }

    /// Whether the fleet has no nodes (never: [`Fleet::start`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.shared.slots.is_empty()
    }

    /// Takes `nodes` offline (their connections dropped without a DISCONNECT: the broker publishes
    /// their last will) or brings them back (they connect again, as the same agent run).
    pub fn set_online(&self, nodes: &[NodeId], online: bool) -> Result<(), NodesError> {
        let slots: Vec<&Arc<Slot>> = nodes
            .iter()
            .map(|n| {
                self.shared
                    .slots
                    .iter()
                    .find(|s| s.node == *n)
                    .ok_or_else(|| NodesError::UnknownNode(n.clone()))
            })
            .collect::<Result<_, _>>()?;
        for slot in slots {
            slot.online.send_replace(online);
        }
        Ok(())
    }

    /// `count` nodes spread evenly over the fleet (for [`Fleet::set_online`]).
    pub fn spread(&self, count: usize) -> Vec<NodeId> {
        let n = self.len();
        let count = count.min(n);
        (0..count)
            .map(|k| self.shared.slots[k * n / count].node.clone())
            .collect()
    }

    /// Makes every node running `version` fail it (quarantine, fall back), or none (`None`).
    pub fn fail_version(&self, version: Option<FailVersion>) {
        *self.shared.failing.write().unwrap() = version;
    }

    /// The fleet's counts.
    pub fn totals(&self) -> Totals {
        let mut totals = self.shared.counters.totals();
        let (held, bytes) = self.shared.modules.verified();
        totals.modules_held = held as u64;
        totals.module_bytes_held = bytes as u64;
        totals
    }

    /// Every node: connected, active versions, assignments with their times.
    pub fn observe(&self) -> Vec<NodeView> {
        self.shared
            .slots
            .iter()
            .map(|slot| {
                let connected = slot.client.lock().unwrap().is_some();
                let hollow = slot.hollow.lock().unwrap();
                NodeView {
                    node: slot.node.clone(),
                    connected,
                    first_connected_at_ms: slot.first_connected_at_ms.get().copied(),
                    active: hollow
                        .active()
                        .map(|(c, m)| (c.clone(), m.clone()))
                        .collect(),
                    assignments: hollow.history().cloned().collect(),
                    refused: hollow.refused(),
                }
            })
            .collect()
    }

    /// How many nodes run each (class, version) now, by class, module name and version.
    pub fn versions(&self) -> Vec<Running> {
        let mut counts: HashMap<(ClassId, ModuleRef), usize> = HashMap::new();
        for slot in &self.shared.slots {
            let hollow = slot.hollow.lock().unwrap();
            for (class, module) in hollow.active() {
                *counts.entry((class.clone(), module.clone())).or_insert(0) += 1;
            }
        }
        let mut versions: Vec<Running> = counts
            .into_iter()
            .map(|((class, module), nodes)| Running {
                class,
                module,
                nodes,
            })
            .collect();
        versions.sort_by(|a, b| {
            (&a.class, &a.module.name, &a.module.version).cmp(&(
                &b.class,
                &b.module.name,
                &b.module.version,
            ))
        });
        versions
    }

    /// Shuts every node down like an agent (an offline status, DISCONNECT) and waits for them.
    pub async fn stop(mut self) {
        self.stop.send_replace(true);
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Publishes every node's status once per interval, node `i` at `i / n` into it.
async fn schedule_statuses(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let n = shared.slots.len() as u32;
    let epoch = Instant::now() + shared.interval;
    for cycle in 0u32.. {
        for (i, slot) in shared.slots.iter().enumerate() {
            let at = epoch + shared.interval * cycle + shared.interval * i as u32 / n;
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = stop.changed() => return,
            }
            publish_status(slot, &shared);
        }
    }
}

/// Publishes the node's status now, if it is connected (QoS 0, retained, as agents do).
fn publish_status(slot: &Slot, shared: &Shared) {
    let Some(client) = slot.client.lock().unwrap().clone() else {
        return;
    };
    let (payload, actions) = {
        let failing = shared.failing.read().unwrap();
        let ctx = shared.context(failing.as_ref());
        let mut hollow = slot.hollow.lock().unwrap();
        let (status, actions) = hollow.report(&ctx);
        (codec::encode(&status), actions)
    };
    let published = client.try_publish(link::status_topic(slot), QoS::AtMostOnce, true, payload);
    if published.is_ok() {
        count(&shared.counters.statuses, 1);
        slot.hollow.lock().unwrap().reported(now_ms());
    } else {
        count(&shared.counters.statuses_dropped, 1);
    }
    link::carry_out(slot, shared, &client, actions);
}

/// Raises the soft open-files limit to the hard one when `nodes` connections need it.
fn raise_open_files(nodes: usize) -> Result<(), NodesError> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let needed = nodes as u64 + SPARE_FILES;
    let limit = getrlimit(Resource::Nofile);
    let (current, maximum) = (
        limit.current.unwrap_or(u64::MAX),
        limit.maximum.unwrap_or(u64::MAX),
    );
    if current >= needed {
        return Ok(());
    }
    if maximum < needed {
        return Err(NodesError::TooManyFiles {
            nodes,
            needed,
            limit: maximum,
        });
    }
    let mut raised = limit;
    raised.current = limit.maximum;
    setrlimit(Resource::Nofile, raised).map_err(|e| NodesError::FileLimit {
        wanted: maximum,
        source: e.into(),
    })
}

/// Now, in ms since the UNIX epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
