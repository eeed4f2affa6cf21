//! The three core crates stay pure: no I/O or async dependency, no clock, no
//! files, sockets, threads or randomness in their sources.

use std::path::{Path, PathBuf};

const CORES: [&str; 3] = ["queue-core", "agent-fsm", "scheduler"];
const FORBIDDEN_DEPS: [&str; 7] = [
    "tokio",
    "hyper",
    "hyper-util",
    "fastwebsockets",
    "rusqlite",
    "async-trait",
    "rand",
];
const FORBIDDEN_CODE: [&str; 8] = [
    "SystemTime::now",
    "Instant::now",
    "std::fs",
    "std::net",
    "std::thread",
    "tokio::",
    "rand::",
    "getrandom",
];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            // Unit tests live in `tests` folders beside the modules; they may use anything.
            if path.file_name().is_some_and(|n| n != "tests") {
                sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "tests.rs")
        {
            out.push(path);
        }
    }
}

#[test]
fn core_crates_depend_on_nothing_that_does_io() {
    for core in CORES {
        let manifest = std::fs::read_to_string(workspace().join(core).join("Cargo.toml")).unwrap();
        let deps = manifest
            .split("[dependencies]")
            .nth(1)
            .and_then(|rest| rest.split("\n[").next())
            .unwrap_or("");
        for line in deps.lines() {
            let name = line.split(['=', '.']).next().unwrap_or("").trim();
            assert!(!FORBIDDEN_DEPS.contains(&name), "{core} depends on {name}");
        }
    }
}

#[test]
fn core_sources_read_no_clock_and_touch_no_files_sockets_or_randomness() {
    for core in CORES {
        let mut files = Vec::new();
        sources(&workspace().join(core).join("src"), &mut files);
        assert!(!files.is_empty());
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for needle in FORBIDDEN_CODE {
                    assert!(
                        !code.contains(needle),
                        "{}:{}: uses {needle}",
                        file.display(),
                        n + 1
                    );
                }
            }
        }
    }
}
