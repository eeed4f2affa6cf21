//! The fuzz targets over their seed corpus (a few seconds of the fuzz suite on
//! every `cargo test`), and the list of targets against the `fuzz/` package.

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::{Verdict, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted by name, with their bytes.
fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut files: Vec<(String, Vec<u8>)> = entries
        .map(|entry| {
            let path = entry.expect("a directory entry").path();
            let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let name = path.file_name().expect("a file name");
            (name.to_string_lossy().into_owned(), bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_target_has_a_body_and_a_seed_corpus() {
    let on_disk: BTreeSet<String> = files(&fuzz_dir().join("fuzz_targets"))
        .into_iter()
        .filter_map(|(name, _)| name.strip_suffix(".rs").map(str::to_owned))
        .collect();
    let listed: BTreeSet<String> = TARGETS.iter().map(|(n, _)| (*n).to_owned()).collect();
    assert_eq!(on_disk, listed);
    let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    for (name, _) in TARGETS {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let source = std::fs::read_to_string(fuzz_dir().join(format!("fuzz_targets/{name}.rs")))
            .expect("the target's source");
        assert!(
            source.contains(&format!("coordinator_bin::fuzzing::{name}(")),
            "fuzz_targets/{name}.rs does not call its body"
        );
    }
}

#[test]
fn every_seed_passes_its_target_and_each_corpus_has_taken_and_refused_inputs() {
    let mut failures = Vec::new();
    for (name, body) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name));
        assert!(seeds.len() >= 3, "{name}: only {} seeds", seeds.len());
        let mut verdicts = Vec::new();
        for (file, bytes) in &seeds {
            match catch_unwind(AssertUnwindSafe(|| body(bytes))) {
                Ok(verdict) => verdicts.push(verdict),
                Err(_) => failures.push(format!("{name}/{file}")),
            }
        }
        for verdict in [Verdict::Accepted, Verdict::Refused] {
            assert!(
                verdicts.contains(&verdict),
                "{name}: no seed is {verdict:?}"
            );
        }
    }
    assert!(
        failures.is_empty(),
        "seeds that break a property: {failures:?}"
    );
}
