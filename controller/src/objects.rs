//! The declared objects the controller reconciles, whatever their source: the Kubernetes API
//! (`kube` watches) or, in standalone mode, a folder of YAML files ([`read_folder`]) in the same
//! `apiVersion`/`kind` form that `kubectl apply` takes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fleet::Labels;
use crate::resources::{API_VERSION, DeviceClassSpec, EdgeNodeSpec, HandlerModuleSpec};

/// Every declared object, by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Objects {
    /// HandlerModules.
    pub modules: BTreeMap<String, Declared<HandlerModuleSpec>>,
    /// DeviceClasses.
    pub classes: BTreeMap<String, Declared<DeviceClassSpec>>,
    /// EdgeNodes declared or created (their labels and spec).
    pub edge_nodes: BTreeMap<String, Declared<EdgeNodeSpec>>,
    /// Labels of Kubernetes Nodes (empty in standalone mode).
    pub node_labels: BTreeMap<String, Labels>,
    /// Files that could not be read or parsed, with why (standalone mode).
    pub errors: Vec<String>,
    /// Every source has been read completely (each Kubernetes kind listed, the folder read).
    /// Until then nothing is planned: a partial view would withdraw what it has not seen yet.
    pub complete: bool,
}

/// One object: its spec, labels and generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Declared<T> {
    /// The spec.
    pub spec: T,
    /// `metadata.labels`.
    pub labels: Labels,
    /// `metadata.annotations` (DeviceClasses only: the rollout action).
    pub annotations: Labels,
    /// `metadata.generation` (standalone: 1).
    pub generation: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    #[serde(default)]
    spec: serde_json::Value,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    annotations: Labels,
}

/// The object files of a folder: `*.yaml`, `*.yml`, `*.json`, in name order, not recursive.
pub fn object_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every object in `dir`. A file that cannot be parsed, or an object that is invalid, is
/// reported in [`Objects::errors`] and left out; the others still count.
pub fn read_folder(dir: &Path) -> Objects {
    let mut objects = Objects {
        complete: true,
        ..Objects::default()
    };
    let files = match object_files(dir) {
        Ok(files) => files,
        Err(e) => {
            objects
                .errors
                .push(format!("cannot list {}: {e}", dir.display()));
            objects.complete = false;
            return objects;
        }
    };
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                objects
                    .errors
                    .push(format!("{}: cannot read: {e}", file.display()));
                continue;
            }
        };
        if let Err(e) = add_documents(&mut objects, &text) {
            objects.errors.push(format!("{}: {e}", file.display()));
        }
    }
    objects
}

/// Adds the objects of one YAML (or JSON) text, possibly several `---` documents.
pub fn add_documents(objects: &mut Objects, text: &str) -> Result<(), String> {
    let documents: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(text).map_err(|e| format!("not YAML: {e}"))?;
    for value in documents.into_iter().filter(|v| !v.is_null()) {
        let document: Document = serde_json::from_value(value)
            .map_err(|e| format!("not an object with apiVersion, kind and metadata.name: {e}"))?;
        if document.api_version != API_VERSION {
            return Err(format!(
                "apiVersion {:?} is not {API_VERSION}",
                document.api_version
            ));
        }
        let name = document.metadata.name;
        check_name(&name)?;
        let labels = document.metadata.labels;
        let annotations = document.metadata.annotations;
        let spec = document.spec;
        let bad = |e: serde_json::Error| format!("{} {name}: bad spec: {e}", document.kind);
        match document.kind.as_str() {
            "HandlerModule" => {
                let spec: HandlerModuleSpec = serde_json::from_value(spec).map_err(bad)?;
                objects.modules.insert(name, declared(spec, labels));
            }
            "DeviceClass" => {
                let spec: DeviceClassSpec = serde_json::from_value(spec).map_err(bad)?;
                let mut class = declared(spec, labels);
                class.annotations = annotations;
                objects.classes.insert(name, class);
            }
            "EdgeNode" => {
                let spec: EdgeNodeSpec = if spec.is_null() {
                    EdgeNodeSpec::default()
                } else {
                    serde_json::from_value(spec).map_err(bad)?
                };
                objects.edge_nodes.insert(name, declared(spec, labels));
            }
            other => {
                return Err(format!(
                    "kind {other:?} is not one of HandlerModule, DeviceClass, EdgeNode"
                ));
            }
        }
    }
    Ok(())
}

/// Object names follow Kubernetes' rule for these kinds (a DNS subdomain: lower-case letters,
/// digits, `-` and `.`, at most 253 characters); they also name files of the local store.
fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(())
    } else {
        Err(format!(
            "metadata.name {:?} is not a valid name: lower-case letters, digits, '-' and '.', \
             starting and ending with a letter or digit, at most 253 characters",
            name.chars().take(80).collect::<String>()
        ))
    }
}

fn declared<T>(spec: T, labels: Labels) -> Declared<T> {
    Declared {
        spec,
        labels,
        annotations: Labels::new(),
        generation: Some(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLEET: &str = r#"
apiVersion: edgefleet.dev/v1alpha1
kind: HandlerModule
metadata:
  name: thermostat-1.0.0
spec:
  module: thermostat
  version: 1.0.0
  file: thermostat.wasm
---
apiVersion: edgefleet.dev/v1alpha1
kind: DeviceClass
metadata:
  name: thermo
spec:
  module: thermostat-1.0.0
  config: {setpoint_c: 21.5}
  limits: {timeBudgetMs: 20}
  nodeSelector:
    matchLabels: {site: a}
---
apiVersion: edgefleet.dev/v1alpha1
kind: EdgeNode
metadata:
  name: edge-1
  labels: {site: a}
"#;

    #[test]
    fn a_folder_of_yaml_gives_the_objects() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("fleet.yaml"), FLEET).unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        let objects = read_folder(dir.path());
        assert!(objects.errors.is_empty(), "{:?}", objects.errors);
        assert_eq!(objects.modules["thermostat-1.0.0"].spec.version, "1.0.0");
        assert_eq!(objects.modules["thermostat-1.0.0"].spec.abi_version, 1);
        let class = &objects.classes["thermo"].spec;
        assert_eq!(class.limits.time_budget_ms, Some(20));
        assert_eq!(class.config.as_ref().unwrap()["setpoint_c"], 21.5);
        assert_eq!(objects.edge_nodes["edge-1"].labels["site"], "a");
    }

    #[test]
    fn a_bad_file_is_reported_and_the_others_still_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), FLEET).unwrap();
        std::fs::write(dir.path().join("b.yaml"), "kind: [unclosed").unwrap();
        std::fs::write(
            dir.path().join("c.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("d.yaml"),
            "apiVersion: edgefleet.dev/v1alpha1\nkind: DeviceClass\nmetadata: {name: x}\nspec: {limits: {}}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("e.yaml"),
            "apiVersion: edgefleet.dev/v1alpha1\nkind: EdgeNode\nmetadata: {name: ../../etc}\n",
        )
        .unwrap();
        let objects = read_folder(dir.path());
        assert_eq!(objects.errors.len(), 4, "{:?}", objects.errors);
        assert!(objects.errors[3].contains("not a valid name"));
        assert!(objects.errors[0].contains("b.yaml"));
        assert!(objects.errors[1].contains("apiVersion"));
        assert!(
            objects.errors[2].contains("module"),
            "{}",
            objects.errors[2]
        );
        assert_eq!(objects.classes.len(), 1);
    }
}
