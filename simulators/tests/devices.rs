//! The device simulator's own behaviour against a real (plain) mosquitto, with no agent: what it
//! sends and when. Its oracle against a real agent is tested in controller/tests/devices.rs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use edgefleet_protocol::id::ClassId;
use edgefleet_simulators::broker::Broker;
use edgefleet_simulators::devices::{ClassPlan, Connect, Kind, Plan, Simulation};
use rumqttc::MqttOptions;

async fn until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(started.elapsed() < limit, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_send_once_all_connected_nothing_is_sent_before_the_last_device_connects() {
    let broker = Broker::plain().unwrap();
    // The last device's broker is down at first.
    let mut late = Broker::plain().unwrap();
    late.stop().unwrap();
    let (port, late_port) = (broker.port(), late.port());
    let connect: Arc<Connect> = Arc::new(move |index, id| {
        let port = if index == 9 { late_port } else { port };
        Ok(MqttOptions::new(id.as_str(), "127.0.0.1", port))
    });
    let plan = Plan {
        classes: vec![ClassPlan {
            kind: Kind::Thermostat,
            class: ClassId::new("thermo").unwrap(),
            config: serde_json::Value::Null,
            weight: 1,
        }],
        devices: 10,
        rate_per_s: 20.0,
        send_once_all_connected: true,
        drain: Duration::from_millis(100),
        ..Plan::default()
    };
    let simulation = Simulation::start(plan, connect).unwrap();
    let limit = Duration::from_secs(20);
    until("9 devices connected", limit, || {
        simulation.snapshot().connected == 9
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        simulation.snapshot().sent(),
        0,
        "no device sends while one is not connected"
    );
    late.start().unwrap();
    until("every device connected and sending", limit, || {
        let s = simulation.snapshot();
        s.connected == 10 && s.sent() >= 10
    })
    .await;
    let report = simulation.stop().await;
    assert!(report.at_end.sent() >= 10, "{}", report.table());
}
