//! The CRDs committed in k3s/crds/ are exactly what the Rust types generate.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../k3s/crds");
    let mut stale = Vec::new();
    for (file, crd) in edgefleet_controller::crds::all() {
        let path = dir.join(file);
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        if committed != edgefleet_controller::crds::to_yaml(&crd) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "{} drifted from controller/src/resources.rs; regenerate with\n  \
         cargo run -p edgefleet-controller -- crds --out-dir k3s/crds",
        stale.join(", ")
    );
}
