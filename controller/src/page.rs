//! The fleet page: `GET /fleet`, a small read-only web page, and `GET /api/v1alpha1/fleet`, the
//! JSON it polls every 2 s. Both modes serve it: the view is built by the loop (`control`) from
//! what it holds in memory — the node table's EdgeNode statuses, the DeviceClass statuses with
//! their rollouts, the rate [`History`] — and handed over on a `watch` channel, so the page
//! costs the loop one bounded view per tick whatever the number of viewers.
//!
//! **Bounded.** At most [`MAX_NODES`] nodes are listed, the unhealthy ones first; the counts
//! cover every node. Classes are declared by operators and all listed.
//!
//! **One self-contained page** (`page/fleet.html` with `page/fleet.css` and `page/fleet.js`
//! inlined at start): no external fetches, no build step. Every string from the fleet reaches the
//! DOM as text (the script never uses `innerHTML`), and the Content-Security-Policy allows only
//! the page's own script and style (by hash) and requests to this controller, so even a string
//! that slipped through could not run script.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};

use crate::history::{BUCKET_MS, History, Sample};
use crate::http::Endpoints;
use crate::ingest::NodeTable;
use crate::resources::{DeviceClassStatus, EdgeNodeStatus};

/// Most nodes the view lists.
pub const MAX_NODES: usize = 200;

/// What the page shows, as the loop last saw it.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetView {
    /// When the loop built it, ms since the UNIX epoch (0: not yet).
    pub at_ms: u64,
    /// The cloud link has replayed what the broker holds (else statuses may be missing).
    pub synced: bool,
    /// Nodes by health, over the whole fleet.
    pub counts: NodeCounts,
    /// Nodes, the unhealthy first, then by name; at most [`MAX_NODES`].
    pub nodes: Vec<NodeRow>,
    /// Every class with its status and rollout, by name.
    pub classes: Vec<ClassRow>,
    /// Interactions and faults per second over the last minutes.
    pub history: HistoryView,
}

/// Nodes by [`Health`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCounts {
    /// Every node heard from.
    pub total: usize,
    /// Online, ready and not degraded.
    pub healthy: usize,
    /// Ready, but something fails (the outbox is full …).
    pub degraded: usize,
    /// Online but not ready: a class failing, the device link down, fetching, no module.
    pub not_ready: usize,
    /// Offline (its last will, a clean shutdown, or silence).
    pub offline: usize,
    /// Listed in [`FleetView::nodes`].
    pub shown: usize,
}

/// How a node is doing, worst first (the order the page lists them in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum Health {
    /// Online but not ready.
    NotReady,
    /// Offline.
    Offline,
    /// Ready, but degraded.
    Degraded,
    /// Serving.
    Healthy,
}

/// One node: its health and why, and what `kubectl get edgenode` shows of its EdgeNode status
/// (the fields the page shows, so that 200 rows stay small).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeRow {
    /// The node.
    pub name: String,
    /// How it is doing.
    pub health: Health,
    /// Why: the message of the condition that decides its health.
    pub reason: String,
    /// `Online` or `Offline`.
    pub state: Option<String>,
    /// When the controller last heard from it (RFC 3339).
    pub last_seen: Option<String>,
    /// The agent's version, as it reports it.
    pub agent_version: Option<String>,
    /// Devices heard from in the last minute.
    pub active_devices: u32,
    /// Interactions per second, as text (`12.5/s`).
    pub rate: Option<String>,
    /// Interactions that committed nothing (since the agent started).
    pub errors: u64,
    /// Messages waiting in its outbox.
    pub outbox_depth: u64,
    /// Its classes.
    pub classes: Vec<NodeClass>,
}

/// One class on one node.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeClass {
    /// The class.
    pub class: String,
    /// The version active (`name version`).
    pub active: Option<String>,
    /// A newer version being fetched, with its progress.
    pub pending: Option<String>,
    /// The class's last error on the node.
    pub last_error: Option<String>,
}

impl NodeRow {
    fn new(name: String, status: &EdgeNodeStatus) -> NodeRow {
        let (health, reason) = health(status);
        NodeRow {
            name,
            health,
            reason: reason.to_string(),
            state: status.state.clone(),
            last_seen: status.last_seen.clone(),
            agent_version: status.agent_version.clone(),
            active_devices: status.active_devices,
            rate: status.rate.clone(),
            errors: status.errors,
            outbox_depth: status.outbox_depth,
            classes: status
                .classes
                .iter()
                .map(|c| NodeClass {
                    class: c.class.clone(),
                    active: c.active.clone(),
                    pending: c.pending.clone(),
                    last_error: c.last_error.clone(),
                })
                .collect(),
        }
    }
}

/// One class and its DeviceClass status (versions, rollout).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClassRow {
    /// The class.
    pub name: String,
    /// What `kubectl get dc` shows.
    #[serde(flatten)]
    pub status: DeviceClassStatus,
}

/// The rate series.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryView {
    /// Each sample's length, in seconds.
    pub bucket_s: u64,
    /// Oldest first.
    pub samples: Vec<Sample>,
}

/// A node's health from its EdgeNode status, and the message that says why.
pub fn health(status: &EdgeNodeStatus) -> (Health, &str) {
    let condition = |type_: &str| status.conditions.iter().find(|c| c.type_ == type_);
    let ready = condition("Ready");
    let why = ready.map_or("", |c| c.message.as_str());
    if status.state.as_deref() != Some("Online") {
        return (Health::Offline, why);
    }
    if ready.is_none_or(|c| c.status != "True") {
        return (Health::NotReady, why);
    }
    match condition("Degraded") {
        Some(degraded) if degraded.status == "True" => (Health::Degraded, &degraded.message),
        _ => (Health::Healthy, why),
    }
}

/// The view of what the loop holds at `now_ms`.
pub fn view(
    nodes: &NodeTable,
    classes: &BTreeMap<String, DeviceClassStatus>,
    history: &mut History,
    synced: bool,
    now_ms: u64,
) -> FleetView {
    let mut counts = NodeCounts::default();
    let mut ranked = Vec::with_capacity(nodes.len());
    for (node, _) in nodes.reports() {
        let Some(status) = nodes.status(node) else {
            continue;
        };
        let (health, _) = health(status);
        counts.total += 1;
        match health {
            Health::Healthy => counts.healthy += 1,
            Health::Degraded => counts.degraded += 1,
            Health::NotReady => counts.not_ready += 1,
            Health::Offline => counts.offline += 1,
        }
        ranked.push((health, node, status));
    }
    // The node table iterates in name order and the sort is stable: worst first, then by name.
    ranked.sort_by_key(|(health, _, _)| *health);
    ranked.truncate(MAX_NODES);
    counts.shown = ranked.len();
    let nodes = ranked
        .into_iter()
        .map(|(_, node, status)| NodeRow::new(node.to_string(), status))
        .collect();
    FleetView {
        at_ms: now_ms,
        synced,
        counts,
        nodes,
        classes: classes
            .iter()
            .map(|(name, status)| ClassRow {
                name: name.clone(),
                status: status.clone(),
            })
            .collect(),
        history: HistoryView {
            bucket_s: BUCKET_MS / 1000,
            samples: history.samples(now_ms),
        },
    }
}

/// The page with its style and script inlined, and the policy that allows exactly those.
struct Page {
    html: String,
    policy: String,
}

static PAGE: LazyLock<Page> = LazyLock::new(|| {
    let style = include_str!("page/fleet.css");
    let script = include_str!("page/fleet.js");
    let hash = |text: &str| {
        let digest = Sha256::digest(text.as_bytes());
        format!(
            "'sha256-{}'",
            base64::engine::general_purpose::STANDARD.encode(digest)
        )
    };
    Page {
        html: include_str!("page/fleet.html")
            .replacen("/*@STYLE@*/", style, 1)
            .replacen("/*@SCRIPT@*/", script, 1),
        policy: format!(
            "default-src 'none'; script-src {}; style-src {}; connect-src 'self'; \
             img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hash(script),
            hash(style)
        ),
    }
});

/// `GET /fleet`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE.policy.as_str()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE.html.as_str(),
    )
        .into_response()
}

/// What `GET /api/v1alpha1/fleet` answers: the view, whether this replica leads and how old the
/// view is (on the controller's clock, so a browser's clock does not matter).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct Served<'a> {
    leading: bool,
    age_ms: u64,
    #[serde(flatten)]
    view: &'a FleetView,
}

/// `GET /api/v1alpha1/fleet`. A replica that stands by knows nothing of the fleet: it answers an
/// empty view that says so.
pub async fn fleet(State(endpoints): State<Arc<Endpoints>>) -> Response {
    let leading = *endpoints.leading.borrow();
    let view = if leading {
        endpoints.page.borrow().clone()
    } else {
        Arc::default()
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let served = Served {
        leading,
        age_ms: now.saturating_sub(view.at_ms),
        view: &view,
    };
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        axum::Json(served),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::WritePolicy;
    use edgefleet_protocol::status::{ErrorReport, LinkState};
    use edgefleet_protocol::{NodeId, NodeState, NodeStatus};

    const NOW: u64 = 1_800_000_000_000;

    fn report(node: &str, state: NodeState, failing: bool) -> NodeStatus {
        let mut status =
            NodeStatus::last_will(NodeId::new(node).unwrap(), "0.1.0", "0.17.1", 1, NOW, NOW);
        status.state = state;
        status.device_link.state = LinkState::Connected;
        if failing {
            let mut class = crate::history::tests::class_status("thermo");
            class.last_error = Some(ErrorReport {
                at_ms: NOW,
                message: "<b>refused</b>".into(),
            });
            status.classes = vec![class];
        }
        status
    }

    #[test]
    fn the_view_lists_the_worst_nodes_first_and_at_most_max_nodes() {
        let mut table = NodeTable::new(WritePolicy::default());
        for i in 0..MAX_NODES + 50 {
            table.observe_status(report(&format!("ok-{i:03}"), NodeState::Online, false), NOW);
        }
        table.observe_status(report("zz-failing", NodeState::Online, true), NOW);
        table.observe_status(report("zz-gone", NodeState::Offline, false), NOW);
        let view = view(&table, &BTreeMap::new(), &mut History::new(NOW), true, NOW);
        let counts = NodeCounts {
            total: MAX_NODES + 52,
            healthy: MAX_NODES + 50,
            degraded: 0,
            not_ready: 1,
            offline: 1,
            shown: MAX_NODES,
        };
        assert_eq!(view.counts, counts);
        assert_eq!(view.nodes.len(), MAX_NODES);
        // The worst first, whatever their names; then by name.
        let names: Vec<&str> = view.nodes.iter().take(3).map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["zz-failing", "zz-gone", "ok-000"]);
        assert_eq!(view.nodes[0].health, Health::NotReady);
        assert_eq!(view.nodes[0].reason, "thermo: <b>refused</b>");
        assert_eq!(view.nodes[1].health, Health::Offline);
        assert_eq!(
            view.nodes.last().unwrap().name,
            format!("ok-{:03}", MAX_NODES - 3)
        );
    }

    #[test]
    fn health_follows_the_conditions() {
        let mut table = NodeTable::new(WritePolicy::default());
        let mut serving = report("a", NodeState::Online, false);
        table.observe_status(serving.clone(), NOW);
        let status = table.status(&NodeId::new("a").unwrap()).unwrap();
        assert_eq!(
            health(status),
            (Health::Healthy, "online; no class assigned")
        );
        serving.updated_at_ms += 1;
        serving.outbox.capacity = 10;
        serving.outbox.depth = 10;
        table.observe_status(serving.clone(), NOW + 1);
        let status = table.status(&NodeId::new("a").unwrap()).unwrap();
        assert_eq!(health(status).0, Health::Degraded);
        serving.updated_at_ms += 1;
        serving.state = NodeState::Offline;
        table.observe_status(serving, NOW + 2);
        let status = table.status(&NodeId::new("a").unwrap()).unwrap();
        assert_eq!(health(status).0, Health::Offline);
    }

    /// What `GET /api/v1alpha1/fleet` answers with the loop's last view `view`.
    async fn served(view: FleetView, leading: bool) -> serde_json::Value {
        let endpoints = Arc::new(Endpoints {
            registry: prometheus_client::registry::Registry::default(),
            progress: tokio::sync::watch::channel(crate::control::Progress::default()).1,
            leading: tokio::sync::watch::channel(leading).1,
            fleet: None,
            objects_dir: None,
            page: tokio::sync::watch::channel(Arc::new(view)).1,
        });
        let response = fleet(State(endpoints)).await;
        assert_eq!(response.status(), axum::http::StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    #[tokio::test]
    async fn a_standby_replica_says_so_and_shows_nothing_of_the_fleet() {
        let mut table = NodeTable::new(WritePolicy::default());
        table.observe_status(report("a", NodeState::Online, false), NOW);
        // What this replica's loop last built when it led, ten minutes ago.
        let then = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
            - 600_000;
        let old = || {
            view(
                &table,
                &BTreeMap::new(),
                &mut History::new(then),
                true,
                then,
            )
        };
        let standby = served(old(), false).await;
        assert_eq!(standby["leading"], false);
        assert_eq!(standby["atMs"], 0);
        assert_eq!(standby["counts"]["total"], 0);
        assert_eq!(standby["nodes"], serde_json::json!([]));
        // Leading, the view is served with its age on the controller's clock: the page flags
        // a view older than 10 s as out of date.
        let leading = served(old(), true).await;
        assert_eq!(leading["leading"], true);
        assert_eq!(leading["atMs"], then);
        assert_eq!(leading["counts"]["total"], 1);
        assert!(leading["ageMs"].as_u64().unwrap() >= 600_000, "{leading}");
    }

    #[test]
    fn the_page_inlines_its_assets_under_a_policy_that_allows_only_them() {
        let page = &*PAGE;
        assert!(!page.html.contains("@STYLE@") && !page.html.contains("@SCRIPT@"));
        // The script must not end its own element early, nor build DOM from markup.
        assert_eq!(page.html.matches("</script>").count(), 1);
        let script = include_str!("page/fleet.js");
        assert!(!script.contains("innerHTML") && !script.contains("outerHTML"));
        assert!(!script.contains("insertAdjacentHTML") && !script.contains("document.write"));
        // No fetch elsewhere: the only URL is the SVG namespace.
        let svg = "http://www.w3.org/2000/svg";
        assert_eq!(script.matches("http").count(), script.matches(svg).count());
        assert!(!include_str!("page/fleet.css").contains("url("));
        assert!(
            page.policy
                .starts_with("default-src 'none'; script-src 'sha256-")
        );
        assert!(!page.policy.contains("unsafe"));
    }
}
