//! What the handler tests share: one sandbox per test binary, on the worker binary this package
//! builds.

use std::sync::OnceLock;

use edgefleet_sandbox::{Sandbox, SandboxConfig, WorkerCommand};

/// The test binary's sandbox, started on first use.
pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<(Sandbox, tempfile::TempDir)> = OnceLock::new();
    let (sandbox, _) = SANDBOX.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let worker = WorkerCommand::new(env!("CARGO_BIN_EXE_edgefleet-sandbox-worker"));
        let sandbox =
            Sandbox::start(SandboxConfig::new(worker, dir.path())).expect("sandbox starts");
        (sandbox, dir)
    });
    sandbox
}
