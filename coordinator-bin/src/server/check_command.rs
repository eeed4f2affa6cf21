//! `coordinator check --db FILE`: verifies a database file read-only and
//! prints what it found; the exit status says clean (0), damaged (1) or not
//! checkable (2).

use std::fmt::Write;

use super::db::check::{check, CheckReport};
use crate::cli::CheckArgs;
use crate::Failure;

/// Exit status when damage was found.
pub const EXIT_DAMAGED: u8 = 1;
/// Exit status when the file could not be checked (as for a usage error).
pub const EXIT_UNCHECKABLE: u8 = 2;

/// Checks the file, prints the report on stdout, and fails with
/// [`EXIT_DAMAGED`] or [`EXIT_UNCHECKABLE`] unless it is clean.
pub fn run(args: CheckArgs) -> Result<(), Box<dyn std::error::Error>> {
    let report = check(&args.db).map_err(|e| Failure {
        status: EXIT_UNCHECKABLE,
        message: e.to_string(),
    })?;
    print!("{}", render(&args.db.display().to_string(), &report));
    if report.is_clean() {
        return Ok(());
    }
    Err(Box::new(Failure {
        status: EXIT_DAMAGED,
        message: format!(
            "{} is damaged ({} damaged row(s){})",
            args.db.display(),
            report.n_damaged(),
            if report.integrity.is_empty() {
                ""
            } else {
                ", and SQLite's integrity check failed"
            }
        ),
    }))
}

/// The report as text.
pub fn render(path: &str, report: &CheckReport) -> String {
    let mut out = format!("checking {path} (read-only)\n");
    let lines = |out: &mut String, name: &str, found: &[String]| {
        if found.is_empty() {
            let _ = writeln!(out, "{name}: ok");
        } else {
            let _ = writeln!(out, "{name}: {} problem(s)", found.len());
            for line in found {
                let _ = writeln!(out, "  {line}");
            }
        }
    };
    lines(&mut out, "integrity_check", &report.integrity);
    lines(&mut out, "foreign_key_check", &report.foreign_keys);
    for table in &report.tables {
        let _ = writeln!(
            out,
            "{}: {} row(s) checked, {} damaged",
            table.table.name(),
            table.n_rows,
            table.damaged.len()
        );
        for row in &table.damaged {
            let _ = writeln!(out, "  damaged: {row}");
        }
        if let Some(stopped) = &table.stopped {
            let _ = writeln!(out, "  {stopped}");
        }
    }
    for name in &report.unknown_tables {
        let _ = writeln!(out, "{name}: not a coordinator table, not checked");
    }
    let _ = writeln!(
        out,
        "{}",
        if report.is_clean() {
            "clean"
        } else {
            "DAMAGED"
        }
    );
    out
}
