//! `edgefleet rollout status|pause|resume|promote|abort|undo|retry CLASS`: a device class's staged
//! rollout, read from its status and steered through its `edgefleet.dev/rollout-action`
//! annotation — the same annotation plain `kubectl annotate` sets, so the CLI holds no power an
//! operator without it lacks. The value is `<action>:<time in ms>`, new on every call; the
//! controller carries out each new value once and records it in `status.rollout.lastAction`,
//! which this command waits for.

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use edgefleet_controller::resources::{DeviceClass, ROLLOUT_ACTION_ANNOTATION, RolloutStatus};

use crate::Error;
use crate::get::{self, Kind};
use crate::target::{Target, TargetArgs};

pub(crate) const EXAMPLES: &str = "\
Examples:
  # Where the rollout of class thermo stands; follow it until it ends
  edgefleet rollout status thermo
  edgefleet rollout status thermo --watch

  # Hold it where it is, then let it go on
  edgefleet rollout pause thermo
  edgefleet rollout resume thermo

  # Skip the remaining gates: every selected node gets the new version now
  edgefleet rollout promote thermo

  # Give every node the stable version back (abort a rollout under way; undo a completed one)
  edgefleet rollout abort thermo
  edgefleet rollout undo thermo

  # Start a rolled-back rollout again from its first step
  edgefleet rollout retry thermo

  # The same with plain kubectl (any new value after the colon)
  kubectl annotate deviceclasses.edgefleet.dev thermo edgefleet.dev/rollout-action=promote:1 --overwrite";

/// Arguments of `edgefleet rollout`.
#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    action: RolloutCommand,
}

/// What to do with a class's rollout.
#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Show the rollout: phase, step, versions, nodes updated/healthy/failing/pending, the gate's
    /// last measurement and why it is where it is.
    Status {
        #[command(flatten)]
        class: ClassArg,
        /// Print every change until the rollout is neither Progressing nor Paused.
        #[arg(long)]
        watch: bool,
    },
    /// Hold the rollout: no new node gets the new version until `resume`.
    Pause(ClassArg),
    /// Let a paused rollout go on (the current step's clock starts again). A class whose
    /// spec.rollout.paused is true stays paused until that is false.
    Resume(ClassArg),
    /// Skip the remaining gates: every selected node gets the new version at once.
    Promote(ClassArg),
    /// Stop the rollout under way and give every node the stable version back.
    Abort(ClassArg),
    /// Give every node the stable version back: aborts a rollout under way, or undoes a
    /// completed one (back to the version before it).
    Undo(ClassArg),
    /// Start a rolled-back or failed rollout again from its first step.
    Retry(ClassArg),
}

#[derive(Debug, Args)]
struct ClassArg {
    /// The DeviceClass.
    class: String,
    #[command(flatten)]
    target: TargetArgs,
}

/// Runs `edgefleet rollout`.
pub fn run(args: RolloutArgs) -> Result<(), Error> {
    let (verb, class) = match args.action {
        RolloutCommand::Status { class, watch } => {
            return crate::block_on(status(class, watch));
        }
        RolloutCommand::Pause(c) => ("pause", c),
        RolloutCommand::Resume(c) => ("resume", c),
        RolloutCommand::Promote(c) => ("promote", c),
        RolloutCommand::Abort(c) => ("abort", c),
        RolloutCommand::Undo(c) => ("undo", c),
        RolloutCommand::Retry(c) => ("retry", c),
    };
    crate::block_on(act(verb, class))
}

async fn class_rollout(target: &Target, name: &str) -> Result<Option<RolloutStatus>, Error> {
    let class = target
        .get::<DeviceClass>(name)
        .await?
        .ok_or_else(|| get::not_found(target, Kind::Classes, name))?;
    Ok(class.status.and_then(|s| s.rollout))
}

async fn status(class: ClassArg, watch: bool) -> Result<(), Error> {
    let target = Target::connect(&class.target).await?;
    let mut last = None;
    loop {
        let rollout = class_rollout(&target, &class.class).await?;
        let Some(rollout) = rollout else {
            println!(
                "class {} has no rollout yet (the controller has not planned it, or its module is not ready: {} describe class {})",
                class.class,
                crate::program(),
                class.class
            );
            return Ok(());
        };
        if last.as_ref() != Some(&rollout) {
            println!("{}", text(&rollout));
        }
        let over = !matches!(rollout.phase.as_str(), "Progressing" | "Paused");
        if !watch || over {
            return Ok(());
        }
        last = Some(rollout);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// "stable -> target" while a rollout moves between them; once the target is the stable version,
/// just that version.
pub fn versions(r: &RolloutStatus) -> String {
    match r.stable_version.as_deref() {
        Some(stable) if stable == r.target_version => format!("{stable} (stable)"),
        Some(stable) => format!("{stable} -> {}", r.target_version),
        None => format!("(none) -> {}", r.target_version),
    }
}

/// The rollout as lines a person reads.
fn text(r: &RolloutStatus) -> String {
    let mut lines = vec![
        format!("rollout {}: {} at step {}", r.id, r.phase, r.step),
        format!("  versions: {}", versions(r)),
        format!(
            "  nodes:    {} updated, {} healthy, {} failing, {} pending",
            r.updated_nodes, r.healthy_nodes, r.failing_nodes, r.pending_nodes
        ),
    ];
    if let Some(gate) = &r.gate {
        lines.push(format!("  gate:     {gate}"));
    }
    if let Some(shadow) = &r.shadow {
        lines.push(format!("  shadow:   {shadow}"));
    }
    lines.push(format!("  why:      {}", r.message));
    lines.join("\n")
}

async fn act(verb: &str, class: ClassArg) -> Result<(), Error> {
    let target = Target::connect(&class.target).await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let value = format!("{verb}:{now_ms}");
    target
        .annotate_class(&class.class, ROLLOUT_ACTION_ANNOTATION, &value)
        .await?;
    // The controller records each action it carried out; wait for it to see this one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(rollout) = class_rollout(&target, &class.class).await?
            && rollout.last_action.as_deref() == Some(value.as_str())
        {
            println!("{}", text(&rollout));
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(Error::Fleet(format!(
                "{verb} was written to class {} ({ROLLOUT_ACTION_ANNOTATION}={value}) but the controller has not carried it out after 30 s: is it running and leading? ({} describe class {})",
                class.class,
                crate::program(),
                class.class
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_say_where_the_rollout_goes_and_where_it_ended() {
        let mut r = RolloutStatus {
            target_version: "thermostat 1.1.0".into(),
            ..RolloutStatus::default()
        };
        assert_eq!(versions(&r), "(none) -> thermostat 1.1.0");
        r.stable_version = Some("thermostat 1.0.0".into());
        assert_eq!(versions(&r), "thermostat 1.0.0 -> thermostat 1.1.0");
        r.stable_version = Some("thermostat 1.1.0".into());
        assert_eq!(versions(&r), "thermostat 1.1.0 (stable)");
    }
}
