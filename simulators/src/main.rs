//! `edgefleet-sim`: simulated devices and edge nodes for tests, demos and benchmarks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};
use edgefleet_protocol::id::ClassId;
use edgefleet_simulators::devices::{self, ClassPlan, Kind, Misbehaviour, Plan, Simulation};
use edgefleet_simulators::nodes;

#[derive(Parser)]
#[command(
    name = "edgefleet-sim",
    version,
    about = "Simulated devices and edge nodes for an edgefleet fleet",
    long_about = "Simulated devices and edge nodes for an edgefleet fleet: thousands of real MQTT \
clients with real certificates, for tests, demos and benchmarks."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Real MQTT devices (thermostat, meter, lock, air quality) on device brokers, each checked by
    /// a correctness oracle.
    Devices(DevicesArgs),
    Nodes(nodes::Args),
}

/// Runs devices of one or more classes against the device brokers of edge nodes. Every device is
/// a real MQTT client with its own certificate from the fleet PKI's device CA, a small physical
/// model (a room warms while heating, CO₂ falls while the fan runs) and an oracle that checks
/// every command it receives against the handler's own Rust logic: wrong, lost, duplicated and
/// out-of-order answers are counted and shown with examples.
///
/// Example: 1,000 devices on two brokers, 70 % thermostats, for a minute:
///
///   edgefleet-sim devices --pki ./pki --broker 127.0.0.1:8883 --broker 127.0.0.1:8884 \
///     --class thermostat:70 --class meter:10 --class lock:10 --class air-quality:10 \
///     --devices 1000 --rate 0.5 --duration 60s
///
/// Exit status: 0 when the oracle found nothing wrong, 1 when it did, 2 when the run could not
/// start.
#[derive(clap::Args)]
#[command(verbatim_doc_comment)]
struct DevicesArgs {
    /// The fleet PKI folder (`edgefleet certs init`): device certificates are issued from its
    /// device CA in memory; the brokers' certificates are checked against its fleet CA.
    #[arg(long, env = "EDGEFLEET_PKI", value_name = "DIR")]
    pki: PathBuf,
    /// A device broker (repeat for several edge nodes; devices are spread round-robin).
    #[arg(long = "broker", value_name = "HOST:PORT", required = true, value_parser = host_port)]
    brokers: Vec<(String, u16)>,
    /// A class of devices: KIND[=CLASS][:WEIGHT]. KIND is thermostat, meter, lock or
    /// air-quality; CLASS the DeviceClass name (default: the kind); WEIGHT its share of the
    /// devices (default 1). Repeat for a mix.
    #[arg(long = "class", value_name = "SPEC", default_value = "thermostat", value_parser = class_spec)]
    classes: Vec<(Kind, String, u32)>,
    /// The config of a class, as in its DeviceClass (JSON, or @FILE): CLASS=JSON. The oracle
    /// must know it to compute the right answers; a class without one uses the handler's
    /// defaults.
    #[arg(long = "config", value_name = "CLASS=JSON", value_parser = class_config)]
    configs: Vec<(String, serde_json::Value)>,
    /// Well-behaved devices, spread over the classes by weight.
    #[arg(long, default_value_t = 100)]
    devices: usize,
    /// Messages per second per device.
    #[arg(long, default_value_t = 1.0)]
    rate: f64,
    /// How long the devices send (e.g. 30s, 5m); Ctrl-C stops earlier.
    #[arg(long, default_value = "30s", value_parser = duration)]
    duration: Duration,
    /// Bursts: every device sends N extra messages back to back, every EVERY (N/EVERY, e.g.
    /// 20/10s). Keep N within the class's deviceBurst, or the agent sheds them by design.
    #[arg(long, value_name = "N/EVERY", value_parser = burst)]
    burst: Option<(u32, Duration)>,
    /// A reconnect storm every so often: every device disconnects and reconnects within 2 s.
    #[arg(long, value_name = "EVERY", value_parser = duration)]
    reconnect_every: Option<Duration>,
    /// Extra devices that flood far beyond their class's rate budget (answers not checked).
    #[arg(long, default_value_t = 0)]
    flooders: usize,
    /// Messages per second per flooder.
    #[arg(long, default_value_t = 200.0)]
    flood_rate: f64,
    /// Extra devices that send undecodable bytes every fourth message (checked by the oracle).
    #[arg(long, default_value_t = 0)]
    garbage: usize,
    /// Extra devices that publish on another device's topic and listen to its commands (the
    /// broker must stop both).
    #[arg(long, default_value_t = 0)]
    impostors: usize,
    /// Longest wait for the answers still due after sending stops.
    #[arg(long, default_value = "15s", value_parser = duration)]
    drain: Duration,
    /// Device id prefix (ids are <prefix>-<tag>-<n>); runs side by side need different ones.
    #[arg(long, default_value = "sim")]
    prefix: String,
    /// Seed of the devices' models.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON on stdout (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long, short)]
    quiet: bool,
}

fn host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?}: give HOST:PORT"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{s:?}: {port:?} is not a port number"))?;
    Ok((host.to_string(), port))
}

fn class_spec(s: &str) -> Result<(Kind, String, u32), String> {
    let (rest, weight) = match s.rsplit_once(':') {
        Some((rest, weight)) => (
            rest,
            weight
                .parse()
                .map_err(|_| format!("{s:?}: weight {weight:?} is not a whole number"))?,
        ),
        None => (s, 1),
    };
    let (kind, class) = rest.split_once('=').unwrap_or((rest, rest));
    let kind = Kind::parse(kind).ok_or_else(|| {
        format!("{s:?}: unknown kind {kind:?}; use thermostat, meter, lock or air-quality")
    })?;
    ClassId::new(class).map_err(|e| format!("{s:?}: class {class:?}: {e}"))?;
    Ok((kind, class.to_string(), weight))
}

fn class_config(s: &str) -> Result<(String, serde_json::Value), String> {
    let (class, json) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: give CLASS=JSON or CLASS=@FILE"))?;
    let text = match json.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the config of {class} from {path}: {e}"))?,
        None => json.to_string(),
    };
    let value = serde_json::from_str(&text)
        .map_err(|e| format!("the config of {class} is not JSON: {e}"))?;
    Ok((class.to_string(), value))
}

/// `500ms`, `30s`, `5m`, `1h`.
fn duration(s: &str) -> Result<Duration, String> {
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: give a number and a unit (500ms, 30s, 5m, 1h)"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "s" | "" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

fn burst(s: &str) -> Result<(u32, Duration), String> {
    let (n, every) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: give N/EVERY, e.g. 20/10s"))?;
    let n = n
        .parse()
        .map_err(|_| format!("{s:?}: {n:?} is not a number of messages"))?;
    Ok((n, duration(every)?))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("edgefleet-sim: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Devices(args) => runtime.block_on(run_devices(args)),
        Command::Nodes(args) => match runtime.block_on(nodes::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("edgefleet-sim nodes: {e}");
                ExitCode::from(2)
            }
        },
    }
}

async fn run_devices(args: DevicesArgs) -> ExitCode {
    let fail = |message: String| {
        eprintln!("edgefleet-sim devices: {message}");
        ExitCode::from(2)
    };
    let pki = match edgefleet_pki::FleetPki::open(&args.pki) {
        Ok(pki) => Arc::new(pki),
        Err(e) => {
            return fail(format!(
                "cannot open the PKI in {}: {e} (make one with `edgefleet certs init`)",
                args.pki.display()
            ));
        }
    };
    let mut classes = Vec::new();
    for (kind, class, weight) in &args.classes {
        let config = args
            .configs
            .iter()
            .find(|(name, _)| name == class)
            .map_or(serde_json::Value::Null, |(_, config)| config.clone());
        classes.push(ClassPlan {
            kind: *kind,
            class: ClassId::new(class.as_str()).expect("checked by the parser"),
            config,
            weight: *weight,
        });
    }
    if let Some((name, _)) = args
        .configs
        .iter()
        .find(|(name, _)| !classes.iter().any(|c| c.class.as_str() == name))
    {
        return fail(format!("--config {name}=…: no --class is named {name}"));
    }
    let plan = Plan {
        classes,
        devices: args.devices,
        prefix: args.prefix,
        rate_per_s: args.rate,
        burst: args.burst,
        reconnect_every: args.reconnect_every,
        misbehaviour: Misbehaviour {
            flooders: args.flooders,
            flood_rate_per_s: args.flood_rate,
            garbage: args.garbage,
            impostors: args.impostors,
        },
        drain: args.drain,
        seed: args.seed,
        ..Plan::default()
    };
    let connect = match devices::connect_with_pki(pki, args.brokers) {
        Ok(connect) => connect,
        Err(e) => return fail(e),
    };
    let simulation = match Simulation::start(plan, connect) {
        Ok(simulation) => simulation,
        Err(e) => return fail(e.to_string()),
    };
    let deadline = tokio::time::Instant::now() + args.duration;
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    let mut previous = None;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            _ = &mut ctrl_c => {
                eprintln!("stopping: waiting for the answers still due (Ctrl-C again to abort)");
                break;
            }
            _ = ticks.tick() => {
                let snapshot = simulation.snapshot();
                if !args.quiet {
                    eprintln!("{}", snapshot.progress_line(previous.as_ref()));
                }
                previous = Some(snapshot);
            }
        }
    }
    let report = tokio::select! {
        report = simulation.stop() => report,
        _ = tokio::signal::ctrl_c() => return fail("aborted".into()),
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(json) => println!("{json}"),
            Err(e) => return fail(format!("cannot write the report as JSON: {e}")),
        }
    } else {
        print!("{}", report.table());
    }
    if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
