//! Wasm modules as OCI artifacts against a real registry (docker-registry 2.8 over HTTPS, from
//! edgefleet-testenv): push the real thermostat module and pull it back by digest; what a pull
//! refuses (a tag, altered blobs, a non-Wasm artifact, a module over the cap, an untrusted CA).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use edgefleet_controller::oci::{
    OciError, PushedModule, Registry, RegistryAuth, RegistryOptions, WASM_ARCHITECTURE,
    WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, WASM_OS,
};
use edgefleet_device_modules::{Handler, handler_wasm};
use edgefleet_protocol::Sha256Digest;
use edgefleet_protocol::manifest::MAX_MODULE_BYTES;
use edgefleet_testenv::registry::Registry as TestRegistry;
use futures::StreamExt;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, Config, ImageLayer};
use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, OciImageManifest,
};
use oci_client::{Client, Reference};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// How long a file written by the registry (its access log) may take to show a request.
const LOG_DEADLINE: Duration = Duration::from_secs(10);

fn thermostat() -> Result<Vec<u8>, Box<dyn std::error::Error>> {
    Ok(handler_wasm(Handler::Thermostat)?)
}

/// Our client, trusting the test registry's CA (and the system roots).
fn store(registry: &TestRegistry) -> Result<Registry, OciError> {
    Registry::with_options(RegistryOptions {
        extra_ca_pem: Some(registry.ca_pem().as_bytes().to_vec()),
        ..RegistryOptions::default()
    })
}

/// oci-client itself, for pushing artifacts our code would never write and reading raw objects.
fn raw_client(registry: &TestRegistry) -> Result<Client, Box<dyn std::error::Error>> {
    edgefleet_protocol::tls::install_crypto_provider();
    Ok(Client::try_from(ClientConfig {
        extra_root_certificates: vec![Certificate {
            encoding: CertificateEncoding::Pem,
            data: registry.ca_pem().as_bytes().to_vec(),
        }],
        ..ClientConfig::default()
    })?)
}

fn annotations(version: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "org.opencontainers.image.version".to_owned(),
            version.to_owned(),
        ),
        (
            "org.opencontainers.image.title".to_owned(),
            "thermostat".to_owned(),
        ),
        (
            "org.opencontainers.image.created".to_owned(),
            "2026-11-26T09:30:00Z".to_owned(),
        ),
    ])
}

async fn push_thermostat(
    registry: &TestRegistry,
    store: &Registry,
) -> Result<(Vec<u8>, PushedModule), Box<dyn std::error::Error>> {
    let wasm = thermostat()?;
    let reference = format!("{}/edgefleet/thermostat:1.0.0", registry.host_port());
    let pushed = store.push(&reference, &wasm, &annotations("1.0.0")).await?;
    Ok((wasm, pushed))
}

/// Lines of the registry's access log that fetch the blob `digest`.
fn blob_gets(registry: &TestRegistry, digest: &Sha256Digest) -> Result<usize, std::io::Error> {
    let log = std::fs::read_to_string(registry.log_path())?;
    let needle = format!("GET /v2/edgefleet/thermostat/blobs/sha256:{digest}");
    Ok(log.lines().filter(|line| line.contains(&needle)).count())
}

#[tokio::test]
async fn the_thermostat_module_round_trips_by_digest_in_the_wasm_layout() -> TestResult {
    let registry = TestRegistry::start()?;
    let store = store(&registry)?;
    let wasm = thermostat()?;
    let reference = format!("{}/edgefleet/thermostat:1.0.0", registry.host_port());

    let started = Instant::now();
    let pushed = store.push(&reference, &wasm, &annotations("1.0.0")).await?;
    let push_time = started.elapsed();
    assert_eq!(
        pushed.pinned,
        format!(
            "{}/edgefleet/thermostat@sha256:{}",
            registry.host_port(),
            pushed.manifest_digest
        )
    );
    assert_eq!(pushed.sha256, Sha256Digest::of(&wasm));
    assert_eq!(pushed.size, wasm.len() as u64);

    let started = Instant::now();
    let pulled = store.pull(&pushed.pinned, MAX_MODULE_BYTES).await?;
    let pull_time = started.elapsed();
    assert!(
        pulled.wasm == wasm,
        "pulled bytes differ from the pushed module"
    );
    assert_eq!(pulled.sha256, Sha256Digest::of(&wasm));
    assert_eq!(pulled.manifest_digest, pushed.manifest_digest);
    assert_eq!(pulled.annotations, annotations("1.0.0"));
    eprintln!(
        "thermostat module, {} bytes: push {push_time:?}, pull by digest {pull_time:?}",
        wasm.len()
    );

    // The layout, as another tool sees it (CNCF TAG Runtime Wasm OCI artifact).
    let raw = raw_client(&registry)?;
    let image: Reference = pushed.pinned.parse()?;
    let (manifest, digest, config) = raw
        .pull_manifest_and_config(&image, &RegistryAuth::Anonymous)
        .await?;
    assert_eq!(digest, format!("sha256:{}", pushed.manifest_digest));
    assert_eq!(
        manifest.media_type.as_deref(),
        Some("application/vnd.oci.image.manifest.v1+json")
    );
    assert_eq!(manifest.config.media_type, WASM_CONFIG_MEDIA_TYPE);
    assert_eq!(manifest.layers.len(), 1);
    assert_eq!(manifest.layers[0].media_type, WASM_LAYER_MEDIA_TYPE);
    assert_eq!(
        manifest.layers[0].digest,
        format!("sha256:{}", pushed.sha256)
    );
    let config: serde_json::Value = serde_json::from_str(&config)?;
    assert_eq!(config["architecture"], WASM_ARCHITECTURE);
    assert_eq!(config["os"], WASM_OS);
    assert_eq!(config["created"], "2026-11-26T09:30:00Z");
    assert_eq!(
        config["layerDigests"],
        serde_json::json!([format!("sha256:{}", pushed.sha256)])
    );

    // The tag points at it too; the same module with the same annotations is the same artifact.
    let again = store.push(&reference, &wasm, &annotations("1.0.0")).await?;
    assert_eq!(again.manifest_digest, pushed.manifest_digest);
    let other = store.push(&reference, &wasm, &annotations("1.0.1")).await?;
    assert_ne!(other.manifest_digest, pushed.manifest_digest);
    let tagged = raw
        .fetch_manifest_digest(&reference.parse()?, &RegistryAuth::Anonymous)
        .await?;
    assert_eq!(tagged, format!("sha256:{}", other.manifest_digest));
    Ok(())
}

#[tokio::test]
async fn a_tag_alone_is_refused_before_any_request() -> TestResult {
    // Port 1 on loopback: nothing listens, so any request would fail differently.
    let store = Registry::with_options(RegistryOptions::default())?;
    let err = store
        .pull("127.0.0.1:1/edgefleet/thermostat:1.0.0", MAX_MODULE_BYTES)
        .await
        .err()
        .ok_or("a tag-only reference was pulled")?;
    assert!(matches!(err, OciError::Unpinned { .. }), "{err:?}");
    assert_eq!(err.kind(), "unpinned");
    assert!(
        err.to_string()
            .contains("pin the module by digest: 127.0.0.1:1/edgefleet/thermostat@sha256:…"),
        "{err}"
    );

    // The same against a real registry holding that tag.
    let registry = TestRegistry::start()?;
    let store = self::store(&registry)?;
    push_thermostat(&registry, &store).await?;
    let tag_only = format!("{}/edgefleet/thermostat:1.0.0", registry.host_port());
    let err = store
        .pull(&tag_only, MAX_MODULE_BYTES)
        .await
        .err()
        .ok_or("pulled by tag")?;
    assert_eq!(err.kind(), "unpinned", "{err}");
    Ok(())
}

#[tokio::test]
async fn an_altered_layer_blob_is_a_digest_mismatch() -> TestResult {
    let registry = TestRegistry::start()?;
    let store = store(&registry)?;
    let (wasm, pushed) = push_thermostat(&registry, &store).await?;
    let layer = format!("sha256:{}", pushed.sha256);
    let path = registry.blob_path(&layer).ok_or("bad layer digest")?;
    let mut altered = std::fs::read(&path)?;
    assert!(altered == wasm, "the blob file is not the module");
    let middle = altered.len() / 2;
    altered[middle] ^= 0x01;
    std::fs::write(&path, &altered)?;

    // The registry serves the file's current bytes, under the old digest, without a restart.
    let raw = raw_client(&registry)?;
    let image: Reference = pushed.pinned.parse()?;
    raw.store_auth_if_needed(image.resolve_registry(), &RegistryAuth::Anonymous)
        .await;
    let mut stream = raw.pull_blob_stream(&image, layer.as_str()).await?;
    let mut served = Vec::new();
    while let Some(Ok(chunk)) = stream.next().await {
        served.extend_from_slice(&chunk);
    }
    assert!(
        served == altered,
        "the registry did not serve the altered file"
    );

    let err = store
        .pull(&pushed.pinned, MAX_MODULE_BYTES)
        .await
        .err()
        .ok_or("an altered module was accepted")?;
    match &err {
        OciError::DigestMismatch {
            object,
            expected,
            found,
        } => {
            assert_eq!(*object, "module layer");
            assert_eq!(*expected, layer);
            assert_eq!(*found, format!("sha256:{}", Sha256Digest::of(&altered)));
        }
        other => return Err(format!("expected DigestMismatch, got {other:?}").into()),
    }
    assert_eq!(err.kind(), "digest_mismatch");
    assert!(!err.is_permanent());

    // Shorter than declared: refused by length (the registry now declares the file's size).
    std::fs::write(&path, &wasm[..wasm.len() - 1])?;
    let err = store
        .pull(&pushed.pinned, MAX_MODULE_BYTES)
        .await
        .err()
        .ok_or("short accepted")?;
    assert!(
        matches!(err, OciError::SizeMismatch { declared, found } if declared == wasm.len() as u64 && found == declared - 1),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn an_altered_manifest_blob_is_a_digest_mismatch() -> TestResult {
    let registry = TestRegistry::start()?;
    let store = store(&registry)?;
    let (_, pushed) = push_thermostat(&registry, &store).await?;
    let path = registry
        .blob_path(&format!("sha256:{}", pushed.manifest_digest))
        .ok_or("bad manifest digest")?;
    let manifest = std::fs::read_to_string(&path)?;
    assert!(manifest.contains("\"1.0.0\""), "{manifest}");
    // Still valid JSON, same length: only the digest tells.
    std::fs::write(&path, manifest.replace("\"1.0.0\"", "\"6.6.6\""))?;
    let err = store
        .pull(&pushed.pinned, MAX_MODULE_BYTES)
        .await
        .err()
        .ok_or("an altered manifest was accepted")?;
    assert!(
        matches!(&err, OciError::DigestMismatch { object: "manifest", expected, .. } if *expected == format!("sha256:{}", pushed.manifest_digest)),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn artifacts_not_in_the_wasm_layout_are_not_wasm() -> TestResult {
    let registry = TestRegistry::start()?;
    let store = store(&registry)?;
    let raw = raw_client(&registry)?;
    let wasm = thermostat()?;
    let auth = RegistryAuth::Anonymous;

    // A container-image shaped artifact (image config, a tar+gzip layer), and the Wasm config with
    // a tar+gzip layer.
    let cases = [
        (
            IMAGE_CONFIG_MEDIA_TYPE,
            IMAGE_LAYER_GZIP_MEDIA_TYPE,
            "config media type",
        ),
        (
            WASM_CONFIG_MEDIA_TYPE,
            IMAGE_LAYER_GZIP_MEDIA_TYPE,
            "layer media type",
        ),
    ];
    for (i, (config_type, layer_type, expected)) in cases.into_iter().enumerate() {
        let image: Reference =
            format!("{}/other/artifact:case{i}", registry.host_port()).parse()?;
        let layers = [ImageLayer::new(wasm.clone(), layer_type.to_owned(), None)];
        let config = Config::new(b"{}".to_vec(), config_type.to_owned(), None);
        raw.push(&image, &layers, config, &auth, None).await?;
        let digest = raw.fetch_manifest_digest(&image, &auth).await?;
        let pinned = format!("{}/other/artifact@{digest}", registry.host_port());
        let err = store
            .pull(&pinned, MAX_MODULE_BYTES)
            .await
            .err()
            .ok_or("a non-Wasm artifact was accepted")?;
        assert_eq!(err.kind(), "not_wasm", "{err}");
        assert!(err.is_permanent());
        assert!(err.to_string().contains(expected), "{err}");
    }

    // Two Wasm layers (the layout says a consumer rejects that).
    let image: Reference = format!("{}/other/artifact:two", registry.host_port()).parse()?;
    let layers = [
        ImageLayer::new(wasm.clone(), WASM_LAYER_MEDIA_TYPE.to_owned(), None),
        ImageLayer::new(
            b"\0asm\x01\0\0\0".to_vec(),
            WASM_LAYER_MEDIA_TYPE.to_owned(),
            None,
        ),
    ];
    let config = Config::new(b"{}".to_vec(), WASM_CONFIG_MEDIA_TYPE.to_owned(), None);
    let manifest = OciImageManifest::build(&layers, &config, None);
    raw.push(&image, &layers, config, &auth, Some(manifest))
        .await?;
    let digest = raw.fetch_manifest_digest(&image, &auth).await?;
    let err = store
        .pull(
            &format!("{}/other/artifact@{digest}", registry.host_port()),
            MAX_MODULE_BYTES,
        )
        .await
        .err()
        .ok_or("two layers accepted")?;
    assert!(err.to_string().contains("exactly one layer"), "{err}");

    // Pushing bytes that are not Wasm is refused before any request.
    let err = store
        .push(
            &format!("{}/edgefleet/x:1", registry.host_port()),
            b"#!/bin/sh",
            &BTreeMap::new(),
        )
        .await
        .err()
        .ok_or("pushed a shell script")?;
    assert_eq!(err.kind(), "not_wasm");
    Ok(())
}

#[tokio::test]
async fn a_module_over_the_cap_is_refused_before_its_download() -> TestResult {
    let registry = TestRegistry::start()?;
    let store = store(&registry)?;
    let (wasm, pushed) = push_thermostat(&registry, &store).await?;
    let size = wasm.len() as u64;
    let err = store
        .pull(&pushed.pinned, size - 1)
        .await
        .err()
        .ok_or("a module over the cap was pulled")?;
    assert!(
        matches!(err, OciError::TooLarge { size: s, cap } if s == size && cap == size - 1),
        "{err:?}"
    );
    assert_eq!(err.kind(), "too_large");

    // Exactly at the cap is fine; the access log shows that pull's blob download, and no earlier
    // one (the refused pull did not download).
    store.pull(&pushed.pinned, size).await?;
    let deadline = Instant::now() + LOG_DEADLINE;
    while blob_gets(&registry, &pushed.sha256)? == 0 {
        if Instant::now() >= deadline {
            return Err(format!(
                "no blob download in the access log:\n{}",
                registry.log_tail()
            )
            .into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        blob_gets(&registry, &pushed.sha256)?,
        1,
        "the refused pull downloaded the blob:\n{}",
        registry.log_tail()
    );
    Ok(())
}

#[tokio::test]
async fn an_untrusted_registry_certificate_is_a_tls_error() -> TestResult {
    let registry = TestRegistry::start()?;
    let (_, pushed) = push_thermostat(&registry, &store(&registry)?).await?;

    // System roots only, and another registry's CA: both refuse the certificate.
    let other = TestRegistry::start()?;
    let clients = [
        Registry::with_options(RegistryOptions::default())?,
        Registry::with_options(RegistryOptions {
            extra_ca_pem: Some(other.ca_pem().as_bytes().to_vec()),
            system_roots: false,
            ..RegistryOptions::default()
        })?,
    ];
    for client in clients {
        let err = client
            .pull(&pushed.pinned, MAX_MODULE_BYTES)
            .await
            .err()
            .ok_or("an untrusted registry was used")?;
        assert!(matches!(err, OciError::Tls { .. }), "{err:?}");
        assert_eq!(err.kind(), "tls");
        assert!(!err.is_permanent());
    }

    // A malformed CA is an error when the client is made, not a silently missing root.
    let err = Registry::with_options(RegistryOptions {
        extra_ca_pem: Some(b"not a certificate".to_vec()),
        ..RegistryOptions::default()
    })
    .err()
    .ok_or("a malformed CA was accepted")?;
    assert_eq!(err.kind(), "config", "{err}");
    Ok(())
}

#[tokio::test]
async fn a_missing_module_is_not_found() -> TestResult {
    let registry = TestRegistry::start()?;
    let store = store(&registry)?;
    push_thermostat(&registry, &store).await?;
    let absent = format!(
        "{}/edgefleet/thermostat@sha256:{}",
        registry.host_port(),
        "0".repeat(64)
    );
    let err = store
        .pull(&absent, MAX_MODULE_BYTES)
        .await
        .err()
        .ok_or("pulled a manifest nobody pushed")?;
    assert_eq!(err.kind(), "not_found", "{err:?}");
    Ok(())
}
