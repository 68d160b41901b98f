//! The fault-handler pin relies on a WasmEdge 0.17.1 implementation detail: its SIGSEGV handler is
//! installed while any call into AOT code is running and reset to SIG_DFL when the last one ends.
//! This test (its own process, since the pin is for good) checks both halves, so that a WasmEdge
//! upgrade that changes the behaviour is noticed.

use edgefleet_device_modules::probe_wasm;
use edgefleet_protocol::ClassLimits;
use edgefleet_sandbox::{Interaction, admission};
use edgefleet_sandbox_worker::engine::{self, LoadedModule};

fn sigsegv_is_default() -> bool {
    // SAFETY: queries the current disposition only (no new action).
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        assert_eq!(
            libc::sigaction(libc::SIGSEGV, std::ptr::null(), &mut current),
            0
        );
        current.sa_sigaction == libc::SIG_DFL
    }
}

#[test]
fn a_parked_aot_call_keeps_the_fault_handlers_installed() {
    engine::quiet_logs();
    let dir = tempfile::tempdir().unwrap();
    let limits = ClassLimits::default();
    let admitted = admission::admit(&probe_wasm("echo"), &limits).unwrap();
    let echo = dir.path().join("echo.so");
    engine::compile(&admitted.wasm, &echo).unwrap();
    let mut module = LoadedModule::load(&echo, admitted.memory, limits, Vec::new()).unwrap();
    let interaction = Interaction {
        device: "d".into(),
        channel: "telemetry".into(),
        payload: b"ping".to_vec(),
        state: None,
        now_ms: 0,
    };

    assert!(module.run(&interaction).is_ok());
    assert!(
        sigsegv_is_default(),
        "without the pin, WasmEdge resets SIGSEGV after each AOT call (the cost the pin removes)"
    );

    let pin = dir.path().join("pin.so");
    engine::compile(edgefleet_sandbox::PIN_MODULE, &pin).unwrap();
    engine::pin_fault_handlers(&pin).unwrap();
    assert!(
        !sigsegv_is_default(),
        "the parked call keeps WasmEdge's handler installed"
    );
    assert!(module.run(&interaction).is_ok());
    assert!(
        !sigsegv_is_default(),
        "and it stays installed after other calls end"
    );
}
