//! `edgefleet get nodes|classes|modules [NAME]`: the fleet's objects as tables with the columns of
//! the CRDs' printer columns (what `kubectl get` shows), or as JSON or YAML.

use clap::{Args, ValueEnum};
use edgefleet_controller::resources::{DeviceClass, EdgeNode, HandlerModule};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use crate::Error;
use crate::output::table;
use crate::target::{FleetKind, Target, TargetArgs, plural};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # Every edge node: online or not, its classes, devices, interaction rate, errors, outbox
  edgefleet get nodes

  # Device classes and how far their rollout is, on a standalone controller
  edgefleet get classes --server http://127.0.0.1:8080

  # One module version, with its digest and source
  edgefleet get module thermostat-1.0.0 -o wide

  # For scripts
  edgefleet get nodes -o json";

/// What to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Kind {
    /// EdgeNodes (also: node, edgenodes, en).
    #[value(aliases = ["node", "edgenode", "edgenodes", "en"])]
    Nodes,
    /// DeviceClasses (also: class, deviceclasses, dc).
    #[value(aliases = ["class", "deviceclass", "deviceclasses", "dc"])]
    Classes,
    /// HandlerModules (also: module, handlermodules, hm).
    #[value(aliases = ["module", "handlermodule", "handlermodules", "hm"])]
    Modules,
}

impl Kind {
    /// The singular noun for messages (`module`).
    pub fn noun(self) -> &'static str {
        match self {
            Kind::Nodes => "edge node",
            Kind::Classes => "device class",
            Kind::Modules => "handler module",
        }
    }
}

/// `-o` of `get`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum GetFormat {
    /// Aligned columns.
    #[default]
    Table,
    /// More columns (agent and links of nodes, digests and sources of modules …).
    Wide,
    /// The objects as JSON (a List when several), as the API serves them.
    Json,
    /// The same as YAML.
    Yaml,
}

/// Arguments of `edgefleet get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// What to list: nodes, classes or modules.
    #[arg(value_enum)]
    kind: Kind,
    /// Only this object (its metadata.name).
    name: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    output: GetFormat,
    #[command(flatten)]
    target: TargetArgs,
}

/// Runs `edgefleet get`.
pub fn run(args: GetArgs) -> Result<(), Error> {
    crate::block_on(async {
        let target = Target::connect(&args.target).await?;
        match args.kind {
            Kind::Nodes => show::<EdgeNode>(&target, &args, node_row).await,
            Kind::Classes => show::<DeviceClass>(&target, &args, class_row).await,
            Kind::Modules => show::<HandlerModule>(&target, &args, module_row).await,
        }
    })
}

/// A row's (header, cell) pairs after NAME; `true`: with the `-o wide` columns.
pub type RowFn<K> = fn(&K, bool) -> Vec<(&'static str, String)>;

async fn show<K: FleetKind>(target: &Target, args: &GetArgs, row: RowFn<K>) -> Result<(), Error> {
    let objects: Vec<K> = match &args.name {
        Some(name) => match target.get::<K>(name).await? {
            Some(object) => vec![object],
            None => return Err(not_found(target, args.kind, name)),
        },
        None => target.list::<K>().await?,
    };
    match args.output {
        GetFormat::Json | GetFormat::Yaml => {
            let value = if args.name.is_some() {
                clean(serde_json::to_value(&objects[0]).unwrap_or_default())
            } else {
                serde_json::json!({
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": objects
                        .iter()
                        .map(|o| clean(serde_json::to_value(o).unwrap_or_default()))
                        .collect::<Vec<_>>(),
                })
            };
            print!("{}", render(&value, args.output)?);
        }
        GetFormat::Table | GetFormat::Wide => {
            if objects.is_empty() {
                eprintln!("No {} on {}.", plural::<K>(), target.describe());
                return Ok(());
            }
            let wide = args.output == GetFormat::Wide;
            print!(
                "{}",
                objects_table(&objects, row, wide, target.is_cluster())
            );
        }
    }
    Ok(())
}

/// `objects` as `get` prints them: NAME, the row's columns, AGE when `age`.
pub fn objects_table<K: FleetKind>(objects: &[K], row: RowFn<K>, wide: bool, age: bool) -> String {
    let rows: Vec<Vec<(&str, String)>> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![("NAME", o.meta().name.clone().unwrap_or_default())];
            cells.extend(row(o, wide));
            if age {
                cells.push(("AGE", self::age(o.meta())));
            }
            cells
        })
        .collect();
    let Some(first) = rows.first() else {
        return String::new();
    };
    let headers: Vec<&str> = first.iter().map(|(h, _)| *h).collect();
    table(
        &headers,
        rows.into_iter()
            .map(|r| r.into_iter().map(|(_, c)| c).collect()),
    )
}

/// The error for an object that is not there.
pub fn not_found(target: &Target, kind: Kind, name: &str) -> Error {
    let list = match kind {
        Kind::Nodes => "nodes",
        Kind::Classes => "classes",
        Kind::Modules => "modules",
    };
    Error::Refused(format!(
        "no {} named {name:?} on {} (`{} get {list}` lists them)",
        kind.noun(),
        target.describe(),
        crate::program()
    ))
}

/// `value` as JSON or YAML text.
pub fn render(value: &Value, format: GetFormat) -> Result<String, Error> {
    if format == GetFormat::Yaml {
        crate::output::to_yaml(value)
    } else {
        serde_json::to_string_pretty(value)
            .map(|json| json + "\n")
            .map_err(|e| Error::Output {
                format: "json",
                reason: e.to_string(),
            })
    }
}

/// An object without what nobody reads (`metadata.managedFields`, as kubectl hides it).
fn clean(mut object: Value) -> Value {
    if let Some(metadata) = object["metadata"].as_object_mut() {
        metadata.remove("managedFields");
    }
    object
}

pub fn node_row(node: &EdgeNode, wide: bool) -> Vec<(&'static str, String)> {
    let status = node.status.clone().unwrap_or_default();
    let mut state = or_none(status.state.clone());
    if node.spec.cordoned {
        state.push_str(",Cordoned");
    }
    let seen = node.status.is_some();
    let count = |n: u64| if seen { n.to_string() } else { NONE.into() };
    let mut cells = vec![
        ("STATUS", state),
        (
            "CLASSES",
            or_none(status.summary.clone().filter(|s| !s.is_empty())),
        ),
        ("DEVICES", count(u64::from(status.active_devices))),
        ("RATE", or_none(status.rate.clone())),
        ("ERRORS", count(status.errors)),
        ("OUTBOX", count(status.outbox_depth)),
        (
            "LAST-SEEN",
            or_none(status.last_seen.as_deref().and_then(parse_time).map(since)),
        ),
    ];
    if wide {
        cells.extend([
            ("AGENT", or_none(status.agent_version.clone())),
            ("WASMEDGE", or_none(status.wasmedge_version.clone())),
            ("UPLINK", or_none(status.uplink.clone())),
            ("DEVICE-LINK", or_none(status.device_link.clone())),
        ]);
    }
    cells
}

pub fn class_row(class: &DeviceClass, wide: bool) -> Vec<(&'static str, String)> {
    let status = class.status.clone().unwrap_or_default();
    let seen = class.status.is_some();
    let count = |n: u32| if seen { n.to_string() } else { NONE.into() };
    let ready = condition(&status.conditions, "Ready");
    let mut cells = vec![
        ("MODULE", class.spec.module.clone()),
        ("VERSION", or_none(status.target_version.clone())),
        ("NODES", count(status.selected_nodes)),
        ("UPDATED", count(status.updated_nodes)),
        ("FAILING", count(status.failing_nodes)),
        ("READY", or_none(ready.map(|c| c.status.clone()))),
        (
            "ROLLOUT",
            or_none(status.rollout.as_ref().map(|r| r.phase.clone())),
        ),
        (
            "STEP",
            or_none(status.rollout.as_ref().map(|r| r.step.clone())),
        ),
    ];
    if wide {
        cells.extend([
            ("ASSIGNED", count(status.assigned_nodes)),
            ("REASON", or_none(ready.map(|c| c.reason.clone()))),
            (
                "SHA256",
                or_none(status.target_sha256.as_deref().map(short_digest)),
            ),
        ]);
    }
    cells
}

fn module_row(module: &HandlerModule, wide: bool) -> Vec<(&'static str, String)> {
    let status = module.status.clone().unwrap_or_default();
    let ready = condition(&status.conditions, "Ready");
    let mut cells = vec![
        ("MODULE", module.spec.module.clone()),
        ("VERSION", module.spec.version.clone()),
        ("READY", or_none(ready.map(|c| c.status.clone()))),
        ("REASON", or_none(ready.map(|c| c.reason.clone()))),
        ("SIZE", or_none(status.size.map(human_bytes))),
    ];
    if wide {
        cells.extend([
            ("SHA256", or_none(status.sha256.clone())),
            ("SOURCE", module_source(module)),
        ]);
    }
    cells
}

/// Where a module's binary comes from: its image or its file.
pub fn module_source(module: &HandlerModule) -> String {
    match (&module.spec.image, &module.spec.file) {
        (Some(image), _) => image.clone(),
        (None, Some(file)) => format!("file {file}"),
        (None, None) => NONE.into(),
    }
}

/// What a missing value shows as (as in kubectl).
pub const NONE: &str = "<none>";

/// `value`, or [`NONE`].
pub fn or_none(value: Option<String>) -> String {
    value.unwrap_or_else(|| NONE.to_owned())
}

/// The condition of `type_`.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// The first 12 hex digits of a SHA-256 (`sha256:` stripped).
pub fn short_digest(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    hex.chars().take(12).collect()
}

/// An RFC 3339 time.
pub fn parse_time(text: &str) -> Option<Timestamp> {
    text.parse().ok()
}

/// The object's age, from `metadata.creationTimestamp`.
pub fn age(meta: &ObjectMeta) -> String {
    meta.creation_timestamp
        .as_ref()
        .map_or_else(|| "<unknown>".to_owned(), |t| since(t.0))
}

/// How long ago `then` was, as kubectl writes ages: `45s`, `3m20s`, `2h5m`, `6d`.
pub fn since(then: Timestamp) -> String {
    human_duration(Timestamp::now().as_second() - then.as_second())
}

fn human_duration(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let s = seconds.max(0);
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    let pair = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    match () {
        () if s < 120 => format!("{s}s"),
        () if m < 10 => pair(m, "m", s % 60, "s"),
        () if m < 180 => format!("{m}m"),
        () if h < 8 => pair(h, "h", m % 60, "m"),
        () if h < 48 => format!("{h}h"),
        () if h < 192 => pair(d, "d", h % 24, "h"),
        () if d < 365 * 2 => format!("{d}d"),
        () if d < 365 * 8 => pair(d / 365, "y", d % 365, "d"),
        () => format!("{}y", d / 365),
    }
}

/// `41.2 KiB`.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes} B")
    } else if b < KIB * KIB {
        format!("{:.1} KiB", b / KIB)
    } else {
        format!("{:.1} MiB", b / KIB / KIB)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_kubectl() {
        let cases = [
            (0, "0s"),
            (59, "59s"),
            (119, "119s"),
            (200, "3m20s"),
            (600, "10m"),
            (3 * 3600 + 5 * 60, "3h5m"),
            (30 * 3600, "30h"),
            (3 * 86_400 + 2 * 3600, "3d2h"),
            (40 * 86_400, "40d"),
            (3 * 365 * 86_400, "3y"),
            (-5, "<invalid>"),
        ];
        for (seconds, text) in cases {
            assert_eq!(human_duration(seconds), text, "{seconds}");
        }
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(42_188), "41.2 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024), "3.0 MiB");
    }
}
