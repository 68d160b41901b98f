//! Which fleet a command talks to, and the few operations the fleet commands need on it.
//!
//! A fleet is either a **cluster** (the controller watches the Kubernetes API; objects are read
//! and applied there, with the kubeconfig's credentials) or a **standalone** controller (objects in
//! a folder, served with their status over its HTTP API: `edgefleet-controller run --objects …`).
//! `--server URL` (or `EDGEFLEET_SERVER`) picks a standalone controller; otherwise the kubeconfig
//! does (`--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`; `--context`). Either way the
//! objects come back in the same form (`apiVersion`, `kind`, `metadata`, `spec`, `status`), so the
//! commands above this module do not care which.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::core::ClusterResourceScope;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Error, program};

/// The field manager of `edgefleet apply` in a cluster (server-side apply).
pub const FIELD_MANAGER: &str = "edgefleet-cli";

/// The variable naming a standalone controller when --server is not given.
const SERVER_VARIABLE: &str = "EDGEFLEET_SERVER";

/// Where the fleet commands go: flags shared by every one of them.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// A standalone controller's HTTP address (what its --listen serves), e.g.
    /// http://127.0.0.1:8080; also $EDGEFLEET_SERVER. Without it, the cluster of the kubeconfig.
    #[arg(long, value_name = "URL", conflicts_with_all = ["kubeconfig", "context"])]
    server: Option<String>,
    /// The kubeconfig of the cluster (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long, value_name = "NAME")]
    context: Option<String>,
}

/// A connected fleet.
pub enum Target {
    /// A Kubernetes cluster.
    Cluster {
        /// The client, with the kubeconfig's credentials.
        client: Client,
        /// The API server's URL, for messages.
        url: String,
    },
    /// A standalone controller's HTTP API.
    Standalone {
        /// `http://host:port`, without a trailing `/`.
        base: String,
        /// The HTTP client.
        http: reqwest::Client,
    },
}

/// What applying one object did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// `HandlerModule`, …
    pub kind: String,
    /// Its name.
    pub name: String,
    /// `created`, `configured` or `unchanged`.
    pub result: String,
}

/// The edgefleet kinds, which are cluster-scoped, as the fleet commands read them.
pub trait FleetKind:
    Resource<DynamicType = (), Scope = ClusterResourceScope>
    + Clone
    + DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
}

impl<K> FleetKind for K where
    K: Resource<DynamicType = (), Scope = ClusterResourceScope>
        + Clone
        + DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug
{
}

impl Target {
    /// The fleet `args` name.
    pub async fn connect(args: &TargetArgs) -> Result<Target, Error> {
        let cluster_flags = args.kubeconfig.is_some() || args.context.is_some();
        let server = match &args.server {
            Some(server) => Some(server.clone()),
            None if !cluster_flags => std::env::var(SERVER_VARIABLE)
                .ok()
                .filter(|s| !s.trim().is_empty()),
            None => None,
        };
        match server {
            Some(server) => Target::standalone(&server),
            None => Target::cluster(args).await,
        }
    }

    pub fn standalone(server: &str) -> Result<Target, Error> {
        let server = server.trim().trim_end_matches('/');
        let base = if server.contains("://") {
            server.to_owned()
        } else {
            format!("http://{server}")
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Refused(format!(
                "--server {server:?}: give the standalone controller's HTTP address, e.g. http://127.0.0.1:8080"
            )));
        }
        edgefleet_protocol::tls::install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Fleet(format!("cannot build the HTTP client: {e}")))?;
        Ok(Target::Standalone { base, http })
    }

    /// The cluster of the kubeconfig at `path`, in its current context.
    pub async fn cluster_of(path: &std::path::Path) -> Result<Target, Error> {
        Target::cluster(&TargetArgs {
            server: None,
            kubeconfig: Some(path.to_path_buf()),
            context: None,
        })
        .await
    }

    async fn cluster(args: &TargetArgs) -> Result<Target, Error> {
        edgefleet_protocol::tls::install_crypto_provider();
        let options = KubeConfigOptions {
            context: args.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = match &args.kubeconfig {
            Some(path) => {
                let kubeconfig = Kubeconfig::read_from(path).map_err(|e| {
                    Error::Fleet(format!(
                        "cannot read the kubeconfig {}: {e}",
                        path.display()
                    ))
                })?;
                kube::Config::from_custom_kubeconfig(kubeconfig, &options).await
            }
            None => {
                let found = std::env::var_os("KUBECONFIG").is_some()
                    || std::env::home_dir().is_some_and(|h| h.join(".kube/config").exists());
                if !found {
                    return Err(Error::Refused(format!(
                        "no fleet to talk to: no kubeconfig ($KUBECONFIG, ~/.kube/config) for a cluster. Give --kubeconfig FILE, or --server http://HOST:PORT (or ${SERVER_VARIABLE}) for a standalone controller (`edgefleet-controller run --objects DIR`); see `{} get --help`",
                        program()
                    )));
                }
                kube::Config::from_kubeconfig(&options).await
            }
        };
        let mut config = config.map_err(|e| {
            Error::Fleet(format!(
                "the kubeconfig{}: {e} (check --kubeconfig and --context)",
                args.context
                    .as_ref()
                    .map(|c| format!(" (context {c})"))
                    .unwrap_or_default()
            ))
        })?;
        config.connect_timeout = Some(Duration::from_secs(10));
        let url = config.cluster_url.to_string();
        let client = Client::try_from(config)
            .map_err(|e| Error::Fleet(format!("cannot make a client for {url}: {e}")))?;
        Ok(Target::Cluster { client, url })
    }

    /// Whether this is a cluster (which keeps creation times and Events).
    pub fn is_cluster(&self) -> bool {
        matches!(self, Target::Cluster { .. })
    }

    /// Every object of kind `K`, in name order.
    pub async fn list<K: FleetKind>(&self) -> Result<Vec<K>, Error> {
        let mut items: Vec<K> = match self {
            Target::Cluster { client, url } => Api::<K>::all(client.clone())
                .list(&ListParams::default())
                .await
                .map_err(|e| cluster_error(url, &e, &plural::<K>()))?
                .items
                .into_iter()
                .collect(),
            Target::Standalone { .. } => {
                let list = self.fetch(&plural::<K>()).await?.ok_or_else(|| {
                    Error::Fleet(format!(
                        "{} serves no fleet API (404 for /api/v1alpha1/{}): it is not a standalone controller; for a controller in a cluster, use its kubeconfig instead of --server",
                        self.describe(),
                        plural::<K>()
                    ))
                })?;
                serde_json::from_value(list["items"].clone()).map_err(|e| {
                    Error::Fleet(format!(
                        "{} sent {} this CLI cannot read: {e} (are the CLI and the controller the same version?)",
                        self.describe(),
                        plural::<K>()
                    ))
                })?
            }
        };
        items.sort_by(|a, b| a.meta().name.cmp(&b.meta().name));
        Ok(items)
    }

    /// The object of kind `K` named `name`, if there is one.
    pub async fn get<K: FleetKind>(&self, name: &str) -> Result<Option<K>, Error> {
        match self {
            Target::Cluster { client, url } => Api::<K>::all(client.clone())
                .get_opt(name)
                .await
                .map_err(|e| cluster_error(url, &e, &plural::<K>())),
            Target::Standalone { .. } => {
                // The list, not /<name>: a 404 then says the object is absent, not the API.
                let items = self.list::<K>().await?;
                Ok(items
                    .into_iter()
                    .find(|o| o.meta().name.as_deref() == Some(name)))
            }
        }
    }

    /// Applies the objects of `sources` (`(where from, YAML text)`, already checked): in a cluster
    /// each object by server-side apply (`force`: taking over fields other managers own); to a
    /// standalone controller each source's text through its apply endpoint.
    pub async fn apply(
        &self,
        sources: &[(String, String)],
        force: bool,
    ) -> Result<Vec<Applied>, Error> {
        match self {
            Target::Cluster { client, url } => {
                let mut applied = Vec::new();
                for (source, text) in sources {
                    let values: Vec<Value> = serde_saphyr::from_multiple(text)
                        .map_err(|e| Error::Refused(format!("{source}: not YAML: {e}")))?;
                    for value in values.into_iter().filter(|v| !v.is_null()) {
                        applied.push(apply_to_cluster(client, url, value, force).await?);
                    }
                }
                Ok(applied)
            }
            Target::Standalone { base, http } => {
                let mut applied = Vec::new();
                for (source, text) in sources {
                    let response = http
                        .post(format!("{base}/api/v1alpha1/apply"))
                        .header("content-type", "application/yaml")
                        .body(text.clone())
                        .send()
                        .await
                        .map_err(|e| self.unreachable(&e))?;
                    let status = response.status();
                    let body: Value = response.json_or_text().await;
                    if !status.is_success() {
                        let message = body["error"]
                            .as_str()
                            .map(str::to_owned)
                            .unwrap_or_else(|| body.to_string());
                        return Err(match status.as_u16() {
                            400 | 409 => Error::Refused(format!(
                                "{source}: the controller refused it: {message}"
                            )),
                            404 | 405 => Error::Fleet(format!(
                                "{}: {message} (an older controller without POST /api/v1alpha1/apply, or not a standalone controller?)",
                                self.describe()
                            )),
                            _ => Error::Fleet(format!(
                                "{source}: the controller at {base} failed ({status}): {message}"
                            )),
                        });
                    }
                    if body["read"] == false {
                        eprintln!(
                            "note: {source}: written to the objects folder, but the controller had not read it back after 5 s (its log says why)"
                        );
                    }
                    for object in body["applied"].as_array().into_iter().flatten() {
                        applied.push(Applied {
                            kind: object["kind"].as_str().unwrap_or_default().to_owned(),
                            name: object["name"].as_str().unwrap_or_default().to_owned(),
                            result: object["result"].as_str().unwrap_or_default().to_owned(),
                        });
                    }
                }
                Ok(applied)
            }
        }
    }

    /// The Events about an object (cluster only: `None` for a standalone controller), oldest
    /// first. A cluster that refuses to list Events gives the reason instead.
    pub async fn events(
        &self,
        kind: &str,
        name: &str,
        uid: Option<&str>,
    ) -> Option<Result<Vec<Event>, String>> {
        let Target::Cluster { client, .. } = self else {
            return None;
        };
        let params =
            ListParams::default().fields(&format!("regarding.kind={kind},regarding.name={name}"));
        let listed = Api::<Event>::all(client.clone()).list(&params).await;
        Some(match listed {
            Ok(list) => {
                let mut events: Vec<Event> = list
                    .items
                    .into_iter()
                    .filter(|e| {
                        let regarding = e.regarding.as_ref();
                        regarding.and_then(|r| r.kind.as_deref()) == Some(kind)
                            && regarding.and_then(|r| r.name.as_deref()) == Some(name)
                            // An earlier object of the same name is another object.
                            && match (uid, regarding.and_then(|r| r.uid.as_deref())) {
                                (Some(uid), Some(theirs)) => uid == theirs,
                                _ => true,
                            }
                    })
                    .collect();
                events.sort_by_key(crate::describe::event_time);
                Ok(events)
            }
            Err(kube::Error::Api(status)) => Err(status.message.clone()),
            Err(e) => Err(e.to_string()),
        })
    }

    /// Sets one annotation of a DeviceClass: in a cluster by a merge patch (as `kubectl
    /// annotate`), on a standalone controller by applying the class again with it.
    pub async fn annotate_class(&self, name: &str, key: &str, value: &str) -> Result<(), Error> {
        use edgefleet_controller::resources::DeviceClass;
        match self {
            Target::Cluster { client, url } => {
                let patch = serde_json::json!({"metadata": {"annotations": {key: value}}});
                Api::<DeviceClass>::all(client.clone())
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| cluster_error(url, &e, &plural::<DeviceClass>()))?;
                Ok(())
            }
            Target::Standalone { .. } => {
                let mut class = self
                    .get::<DeviceClass>(name)
                    .await?
                    .ok_or_else(|| crate::get::not_found(self, crate::get::Kind::Classes, name))?;
                class.status = None;
                class
                    .metadata
                    .annotations
                    .get_or_insert_default()
                    .insert(key.to_owned(), value.to_owned());
                let text = serde_json::to_string(&class)
                    .map_err(|e| Error::Fleet(format!("cannot write class {name}: {e}")))?;
                self.apply(&[(format!("deviceclass/{name}"), text)], false)
                    .await?;
                Ok(())
            }
        }
    }

    /// `the standalone controller at …` or `the cluster at …`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Cluster { url, .. } => format!("the cluster at {url}"),
            Target::Standalone { base, .. } => format!("the standalone controller at {base}"),
        }
    }

    /// GET `/api/v1alpha1/<path>` of a standalone controller; `None` on 404.
    async fn fetch(&self, path: &str) -> Result<Option<Value>, Error> {
        let Target::Standalone { base, http } = self else {
            unreachable!("fetch is for a standalone controller");
        };
        let response = http
            .get(format!("{base}/api/v1alpha1/{path}"))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.as_u16() == 404 {
            return Ok(None);
        }
        let body = response.json_or_text().await;
        if !status.is_success() {
            return Err(Error::Fleet(format!(
                "{} answered {status} for /api/v1alpha1/{path}: {body}",
                self.describe()
            )));
        }
        Ok(Some(body))
    }

    fn unreachable(&self, e: &reqwest::Error) -> Error {
        let mut cause = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(inner) = source {
            cause = format!("{cause}: {inner}");
            source = inner.source();
        }
        Error::Fleet(format!(
            "cannot reach {}: {cause}. Is `edgefleet-controller run --objects …` running, listening there (its --listen)? (--server, ${SERVER_VARIABLE})",
            self.describe()
        ))
    }
}

/// The plural of `K` (`handlermodules`), as in API paths.
pub fn plural<K: FleetKind>() -> String {
    K::plural(&()).into_owned()
}

/// A JSON body, or the text as a JSON string when it is not JSON.
trait JsonOrText {
    async fn json_or_text(self) -> Value;
}

impl JsonOrText for reqwest::Response {
    async fn json_or_text(self) -> Value {
        let text = self.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::String(text.trim().to_owned()))
    }
}

/// Server-side apply of one checked object.
async fn apply_to_cluster(
    client: &Client,
    url: &str,
    value: Value,
    force: bool,
) -> Result<Applied, Error> {
    use edgefleet_controller::resources::{DeviceClass, EdgeNode, HandlerModule};
    let kind = value["kind"].as_str().unwrap_or_default().to_owned();
    let name = value["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let resource = match kind.as_str() {
        "HandlerModule" => ApiResource::erase::<HandlerModule>(&()),
        "DeviceClass" => ApiResource::erase::<DeviceClass>(&()),
        "EdgeNode" => ApiResource::erase::<EdgeNode>(&()),
        other => {
            return Err(Error::Refused(format!(
                "kind {other:?} is not one of HandlerModule, DeviceClass, EdgeNode"
            )));
        }
    };
    let api = Api::<DynamicObject>::all_with(client.clone(), &resource);
    let failed = |e: kube::Error| match e {
        kube::Error::Api(status) if status.code == 422 || status.code == 400 => {
            Error::Refused(format!(
                "{}/{name}: the cluster refused it: {}",
                kind.to_lowercase(),
                status.message
            ))
        }
        kube::Error::Api(status) if status.code == 409 => Error::Refused(format!(
            "{}/{name}: {} (another field manager owns these fields: change them with that tool, or take them over with --force-conflicts)",
            kind.to_lowercase(),
            status.message
        )),
        e => cluster_error(url, &e, &resource.plural),
    };
    let before = api.get_opt(&name).await.map_err(failed)?;
    let mut params = PatchParams::apply(FIELD_MANAGER);
    if force {
        params = params.force();
    }
    let after = api
        .patch(&name, &params, &Patch::Apply(&value))
        .await
        .map_err(failed)?;
    let result = match before {
        None => "created",
        Some(before) if before.metadata.resource_version == after.metadata.resource_version => {
            "unchanged"
        }
        Some(_) => "configured",
    };
    Ok(Applied {
        kind,
        name,
        result: result.into(),
    })
}

/// A failed cluster request, said so that the operator knows what to do.
fn cluster_error(url: &str, e: &kube::Error, plural: &str) -> Error {
    match e {
        kube::Error::Api(status) if status.code == 404 => Error::Fleet(format!(
            "the cluster at {url} has no {plural}.edgefleet.dev ({}): install the edgefleet CRDs (kubectl apply -f k3s/crds/)",
            status.message
        )),
        kube::Error::Api(status) if status.code == 401 => Error::Fleet(format!(
            "the cluster at {url} does not accept the kubeconfig's credentials ({}): log in again, or check --kubeconfig and --context",
            status.message
        )),
        kube::Error::Api(status) if status.code == 403 => Error::Fleet(format!(
            "the cluster at {url} refused: {} (the kubeconfig's user needs RBAC rights on {plural}.edgefleet.dev)",
            status.message
        )),
        kube::Error::Api(status) => Error::Fleet(format!(
            "the cluster at {url} answered {} {}: {}",
            status.code, status.reason, status.message
        )),
        e => {
            let mut cause = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(inner) = source {
                cause = format!("{cause}: {inner}");
                source = inner.source();
            }
            Error::Fleet(format!(
                "cannot reach the cluster's API server at {url}: {cause} (is the cluster up? check the kubeconfig, --kubeconfig and --context)"
            ))
        }
    }
}
