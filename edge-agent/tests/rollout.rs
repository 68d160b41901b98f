//! Staged rollouts at the edge, end to end (real brokers with mutual TLS, the `edge-agent` binary,
//! real WasmEdge workers): the status reports the rollout step of the assignment a class runs, a
//! quarantined version falls back to the previous one at once, and a shadow version runs beside the
//! active one without acting, its agreement reported.

mod fleet;

use edgefleet_protocol::assignment::{Rollout, RolloutStage};
use fleet::*;

fn rollout(stage: RolloutStage) -> Option<Rollout> {
    Some(Rollout {
        id: "thermostat-7".into(),
        stage,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_reports_the_rollout_step_of_the_running_assignment_across_a_restart() {
    let mut fleet = Fleet::start().await;
    let mut statuses = fleet
        .observe("ops", &format!("ef/v1/node/{NODE}/status"))
        .await;
    let manifest = fleet
        .publish_module(
            "thermostat",
            "1.0.0",
            &handler_wasm(Handler::Thermostat).unwrap(),
        )
        .await;
    let mut canary = assignment("thermostat", 1, manifest, ClassLimits::default());
    canary.rollout = rollout(RolloutStage::Canary);
    fleet.publish_assignment(&canary).await;
    let limit = Duration::from_secs(60);
    until_status(&mut statuses, limit, "the canary step reported", |s| {
        class_status(s, "thermostat")
            .is_some_and(|c| c.active.is_some() && c.rollout == canary.rollout)
    })
    .await;

    // The rollout's next step for this node: a new generation.
    let mut wave = canary.clone();
    wave.generation = 2;
    wave.rollout = rollout(RolloutStage::Wave(1));
    fleet.publish_assignment(&wave).await;
    let before = until_status(&mut statuses, limit, "wave 1 reported", |s| {
        class_status(s, "thermostat")
            .is_some_and(|c| c.generation == Some(2) && c.rollout == wave.rollout)
    })
    .await;

    // A restart (SIGKILL) restores the step from the stored assignment.
    fleet.kill_agent();
    fleet.start_agent();
    let after = until_status(&mut statuses, limit, "the restarted agent's status", |s| {
        s.started_at_ms > before.started_at_ms && class_status(s, "thermostat").is_some()
    })
    .await;
    let class = class_status(&after, "thermostat").unwrap();
    assert_eq!(class.rollout, wave.rollout, "{class:#?}");
    assert_eq!(class.generation, Some(2));
}
