//! Runs the load generator against two `coordinator` binaries back to back on
//! this machine and prints the ratios, so a performance claim is always a
//! same-machine, same-moment comparison.
//!
//! ```text
//! cargo build --release -p coordinator-bin -p smoke-tests
//! target/release/loadgen-compare --baseline OLD/coordinator --current target/release/coordinator \
//!     --rounds 3 -- --tasks 20000 --agents 64 --submitters 8 --batch 100
//! ```
//!
//! Each round runs both binaries, alternating which goes first, with the same
//! load generator arguments (`--spawn --json --coordinator` are added). The
//! table shows each binary's median over the rounds and current ÷ baseline.
//! `smoke-tests/scripts/compare-with-revision.sh REV` builds a git revision
//! into its own target folder and calls this.

use std::path::PathBuf;
use std::process::Command;

use clap::Parser;
use serde_json::{json, Value};

/// Compares two coordinator binaries under the same load.
#[derive(Debug, Parser)]
#[command(name = "loadgen-compare")]
struct Args {
    /// The coordinator binary to compare against.
    #[arg(long, value_name = "PATH")]
    baseline: PathBuf,
    /// The coordinator binary being measured.
    #[arg(long, value_name = "PATH")]
    current: PathBuf,
    /// Rounds; each runs both binaries once. Medians are reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The load generator (default: `loadgen` beside this executable).
    #[arg(long, value_name = "PATH")]
    loadgen: Option<PathBuf>,
    /// Print one JSON object on stdout instead of a table.
    #[arg(long)]
    json: bool,
    /// Arguments for every load generator run, after `--`.
    #[arg(last = true)]
    loadgen_args: Vec<String>,
}

/// A figure the comparison reports: its name, where it is in a load generator
/// report, and whether more is better.
struct Figure {
    name: &'static str,
    path: &'static [&'static str],
    higher_is_better: bool,
}

const FIGURES: &[Figure] = &[
    Figure {
        name: "tasks/s",
        path: &["tasks_per_sec"],
        higher_is_better: true,
    },
    Figure {
        name: "submit→assign p50 ms",
        path: &["submit_to_assign_ms", "p50"],
        higher_is_better: false,
    },
    Figure {
        name: "submit→assign p99 ms",
        path: &["submit_to_assign_ms", "p99"],
        higher_is_better: false,
    },
    Figure {
        name: "submit→complete p99 ms",
        path: &["submit_to_complete_ms", "p99"],
        higher_is_better: false,
    },
    Figure {
        name: "bytes written/task",
        path: &["write_bytes_per_task"],
        higher_is_better: false,
    },
    Figure {
        name: "peak RSS bytes",
        path: &["coordinator_peak_rss_bytes"],
        higher_is_better: false,
    },
];

fn figure(report: &Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(report, |v, key| v.get(key))
        .and_then(Value::as_f64)
}

fn median(mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// One load generator run against `coordinator`; its JSON report.
fn run(loadgen: &PathBuf, coordinator: &PathBuf, args: &[String]) -> Result<Value, String> {
    let output = Command::new(loadgen)
        .arg("--spawn")
        .arg("--json")
        .arg("--coordinator")
        .arg(coordinator)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", loadgen.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "loadgen against {} failed ({}): {}{}",
            coordinator.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr),
            stdout
        ));
    }
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .map_err(|e| format!("loadgen printed no JSON report ({e}): {stdout}"))
}

fn loadgen_binary(args: &Args) -> Result<PathBuf, String> {
    let path = match &args.loadgen {
        Some(path) => path.clone(),
        None => std::env::current_exe()
            .map_err(|e| format!("cannot find this executable's path: {e}"))?
            .with_file_name("loadgen"),
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no load generator at {}; build it with `cargo build --release -p smoke-tests` or give --loadgen PATH",
            path.display()
        ))
    }
}

fn main() {
    let args = Args::parse();
    let fail = |e: String| -> ! {
        eprintln!("loadgen-compare: {e}");
        std::process::exit(1)
    };
    let loadgen = loadgen_binary(&args).unwrap_or_else(|e| fail(e));
    for binary in [&args.baseline, &args.current] {
        if !binary.is_file() {
            fail(format!("no coordinator binary at {}", binary.display()));
        }
    }
    let mut baseline = Vec::new();
    let mut current = Vec::new();
    for round in 0..args.rounds.max(1) {
        let order: [(&PathBuf, &mut Vec<Value>); 2] = if round % 2 == 0 {
            [
                (&args.baseline, &mut baseline),
                (&args.current, &mut current),
            ]
        } else {
            [
                (&args.current, &mut current),
                (&args.baseline, &mut baseline),
            ]
        };
        for (binary, reports) in order {
            eprintln!(
                "loadgen-compare: round {} of {}: {}",
                round + 1,
                args.rounds.max(1),
                binary.display()
            );
            reports.push(run(&loadgen, binary, &args.loadgen_args).unwrap_or_else(|e| fail(e)));
        }
    }
    let medians = |reports: &[Value], path: &[&str]| {
        median(reports.iter().filter_map(|r| figure(r, path)).collect())
    };
    let rows: Vec<Value> = FIGURES
        .iter()
        .map(|f| {
            let b = medians(&baseline, f.path);
            let c = medians(&current, f.path);
            let ratio = match (b, c) {
                (Some(b), Some(c)) if b > 0.0 => Some((c / b * 1000.0).round() / 1000.0),
                _ => None,
            };
            json!({
                "figure": f.name,
                "baseline": b,
                "current": c,
                "ratio": ratio,
                "higher_is_better": f.higher_is_better,
            })
        })
        .collect();
    if args.json {
        println!(
            "{}",
            json!({"rounds": args.rounds.max(1), "loadgen_args": args.loadgen_args, "figures": rows, "baseline_runs": baseline, "current_runs": current})
        );
        return;
    }
    println!(
        "{} round(s), loadgen {}",
        args.rounds.max(1),
        args.loadgen_args.join(" ")
    );
    println!(
        "{:<26}{:>14}{:>14}{:>10}",
        "figure (median)", "baseline", "current", "ratio"
    );
    let show = |v: &Value| match v.as_f64() {
        Some(x) if x.fract() == 0.0 => format!("{x:.0}"),
        Some(x) => format!("{x:.3}"),
        None => "-".to_owned(),
    };
    for row in &rows {
        println!(
            "{:<26}{:>14}{:>14}{:>10}",
            row["figure"].as_str().unwrap_or_default(),
            show(&row["baseline"]),
            show(&row["current"]),
            show(&row["ratio"])
        );
    }
}
