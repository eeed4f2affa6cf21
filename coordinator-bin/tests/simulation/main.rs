//! Whole-coordinator deterministic simulation: the real session core with a
//! simulated store (commits finish after random delays; a crash loses what is in
//! flight; a failed commit must stop the session), simulated agent connections
//! (delays, cuts, restarts with and without state, late and duplicated reports,
//! agents that hang or ignore `task_cancel`), simulated HTTP clients (submit,
//! batches, cancel, retry) and coordinator crashes with a restart from the
//! committed records. Invariants are checked after every step; one seed replays
//! one run exactly.
//!
//! ```text
//! cargo test --release -p coordinator-bin --test simulation                 # 10,000 seeds
//! cargo test --release -p coordinator-bin --test simulation -- --seeds 1000000
//! cargo test --release -p coordinator-bin --test simulation -- --seed 42 --trace
//! ```

mod agent;
mod rng;
mod world;

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use world::World;

struct Args {
    seeds: u64,
    start: u64,
    one: Option<u64>,
    trace: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        seeds: 10_000,
        start: 0,
        one: None,
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .ok_or_else(|| format!("{name} takes a number"))
        };
        match arg.as_str() {
            "--seeds" => args.seeds = number("--seeds")?,
            "--start" => args.start = number("--start")?,
            "--seed" => args.one = Some(number("--seed")?),
            "--trace" => args.trace = true,
            "--help" | "-h" => {
                return Err(
                    "options: --seeds N (default 10000), --start S, --seed S [--trace]".into(),
                )
            }
            // Flags cargo or libtest users may pass on to every test binary.
            _ => {}
        }
    }
    Ok(args)
}

/// Runs one seed; the error is the violation with the trace tail when asked.
fn run_seed(seed: u64, trace: bool) -> Result<World, (String, Option<Vec<String>>)> {
    let mut world = World::new(seed, trace);
    match world.run() {
        Ok(()) => Ok(world),
        Err(violation) => Err((violation, world.trace.take())),
    }
}

fn replay_line(seed: u64) -> String {
    format!("replay: cargo test --release -p coordinator-bin --test simulation -- --seed {seed} --trace")
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("simulation: {message}");
            return ExitCode::from(2);
        }
    };
    if let Some(seed) = args.one {
        return match run_seed(seed, args.trace) {
            Ok(world) => {
                if let Some(trace) = &world.trace {
                    for line in trace {
                        println!("{line}");
                    }
                }
                println!(
                    "seed {seed}: ok ({} steps, {} coordinator crashes, {} ms virtual)",
                    world.steps,
                    world.crashes,
                    world.now - world::T0
                );
                println!("simulation: 1 passed, 0 failed");
                ExitCode::SUCCESS
            }
            Err((violation, trace)) => {
                for line in trace.unwrap_or_default() {
                    println!("{line}");
                }
                println!("seed {seed}: FAILED: {violation}");
                println!("{}", replay_line(seed));
                println!("simulation: 0 passed, 1 failed");
                ExitCode::FAILURE
            }
        };
    }
    let next = AtomicU64::new(args.start);
    let end = args.start + args.seeds;
    let failures = Mutex::new(Vec::new());
    let steps = AtomicU64::new(0);
    let crashes = AtomicU64::new(0);
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= end {
                    break;
                }
                match run_seed(seed, false) {
                    Ok(world) => {
                        steps.fetch_add(world.steps, Ordering::Relaxed);
                        crashes.fetch_add(world.crashes, Ordering::Relaxed);
                    }
                    Err((violation, _)) => {
                        let mut failures = failures.lock().unwrap_or_else(|e| e.into_inner());
                        failures.push((seed, violation));
                    }
                }
            });
        }
    });
    let mut failures = failures.into_inner().unwrap_or_else(|e| e.into_inner());
    failures.sort();
    for (seed, violation) in failures.iter().take(20) {
        println!("seed {seed}: FAILED: {violation}");
        println!("{}", replay_line(*seed));
    }
    println!(
        "simulated seeds {}..{} in {:.1} s: {} steps, {} coordinator crashes",
        args.start,
        end,
        started.elapsed().as_secs_f64(),
        steps.load(Ordering::Relaxed),
        crashes.load(Ordering::Relaxed)
    );
    let failed = failures.len() as u64;
    println!(
        "simulation: {} passed, {failed} failed",
        args.seeds - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
