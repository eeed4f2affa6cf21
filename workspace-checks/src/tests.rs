//! The workspace-wide checks: pure cores, complete packages.

use std::path::{Path, PathBuf};

use toml::{Table, Value};

/// The folders of the three pure cores.
const CORES: [&str; 3] = ["queue-core", "agent-fsm", "scheduler"];
/// What a core may depend on. Anything else (an async runtime, a network, a
/// database, randomness) would make it do I/O (`foldhash` is a hash function; its
/// keys come from the standard library's `RandomState`, as every `HashMap`'s do);
/// `serde` only as an optional feature,
/// and `proptest` only as the optional `testing` feature (the test kit, whose
/// strategies are random by design; the cores' own code never calls it).
const CORE_DEPS: [&str; 4] = [
    "thiserror",
    "foldhash",
    "coordinator-queue",
    "coordinator-agent-fsm",
];
const CORE_OPTIONAL_DEPS: [&str; 2] = ["serde", "proptest"];
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
/// Every package of the published family starts with this.
const FAMILY_PREFIX: &str = "coordinator-";
const LICENCE_FILES: [&str; 2] = ["LICENSE-MIT", "LICENSE-APACHE"];

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn manifest(path: &Path) -> Table {
    let text = std::fs::read_to_string(path).expect("readable manifest");
    text.parse().expect("valid TOML manifest")
}

fn table<'a>(table: &'a Table, key: &str) -> Option<&'a Table> {
    table.get(key).and_then(Value::as_table)
}

/// The member folders listed in the root manifest.
fn members() -> Vec<String> {
    let root = manifest(&workspace().join("Cargo.toml"));
    table(&root, "workspace")
        .and_then(|w| w.get("members"))
        .and_then(Value::as_array)
        .expect("workspace.members")
        .iter()
        .map(|m| m.as_str().expect("member folder").to_owned())
        .collect()
}

/// `[package]` of a member and whether it is published.
fn package(folder: &str) -> (Table, bool) {
    let manifest = manifest(&workspace().join(folder).join("Cargo.toml"));
    let package = table(&manifest, "package").expect("[package]").clone();
    let published = package.get("publish").and_then(Value::as_bool) != Some(false);
    (package, published)
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
        let manifest = manifest(&workspace().join(core).join("Cargo.toml"));
        let deps = table(&manifest, "dependencies").expect("[dependencies]");
        for (name, spec) in deps {
            let optional = spec.get("optional").and_then(Value::as_bool) == Some(true);
            let allowed = CORE_DEPS.contains(&name.as_str())
                || (optional && CORE_OPTIONAL_DEPS.contains(&name.as_str()));
            assert!(allowed, "{core} depends on {name} (optional: {optional})");
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

#[test]
fn published_packages_carry_metadata_readme_and_both_licences() {
    let root = workspace();
    let mut published = Vec::new();
    for folder in members() {
        let (package, is_published) = package(&folder);
        if !is_published {
            continue;
        }
        let name = package.get("name").and_then(Value::as_str).expect("name");
        assert!(
            name.starts_with(FAMILY_PREFIX),
            "{folder}: package `{name}` is outside the family"
        );
        for key in [
            "description",
            "license",
            "repository",
            "documentation",
            "readme",
            "keywords",
            "categories",
            "rust-version",
        ] {
            assert!(package.contains_key(key), "{folder}: no `{key}`");
        }
        let keywords = package.get("keywords").and_then(Value::as_array);
        assert!(
            keywords.is_some_and(|k| (1..=5).contains(&k.len())),
            "{folder}: crates.io takes one to five keywords"
        );
        assert_eq!(
            package.get("readme").and_then(Value::as_str),
            Some("README.md"),
            "{folder}: the README is the crate's own"
        );
        let readme = std::fs::read_to_string(root.join(&folder).join("README.md"))
            .unwrap_or_else(|e| panic!("{folder}/README.md: {e}"));
        assert!(
            readme.contains(&format!("# {name}")),
            "{folder}/README.md does not start with the package name"
        );
        for licence in LICENCE_FILES {
            let ours = std::fs::read(root.join(&folder).join(licence))
                .unwrap_or_else(|e| panic!("{folder}/{licence}: {e}"));
            let top = std::fs::read(root.join(licence)).expect("licence at the root");
            assert!(ours == top, "{folder}/{licence} differs from the root's");
        }
        published.push(name.to_owned());
    }
    assert_eq!(published.len(), 5, "published packages: {published:?}");
}

#[test]
fn every_dependency_inside_the_family_has_a_version() {
    let root = manifest(&workspace().join("Cargo.toml"));
    let shared = table(&root, "workspace")
        .and_then(|w| table(w, "dependencies"))
        .expect("[workspace.dependencies]");
    let versioned = |spec: &Value| spec.get("path").is_none() || spec.get("version").is_some();
    for (name, spec) in shared {
        assert!(
            versioned(spec),
            "workspace dependency {name} has a path and no version"
        );
    }
    for folder in members() {
        let (_, published) = package(&folder);
        if !published {
            continue;
        }
        let manifest = manifest(&workspace().join(&folder).join("Cargo.toml"));
        let deps = table(&manifest, "dependencies").expect("[dependencies]");
        for (name, spec) in deps {
            let inherited = spec.get("workspace").and_then(Value::as_bool) == Some(true);
            assert!(
                inherited || versioned(spec),
                "{folder}: dependency {name} has a path and no version"
            );
        }
    }
}

#[test]
fn test_and_check_packages_are_never_published() {
    for folder in ["smoke-tests", "workspace-checks"] {
        let (_, published) = package(folder);
        assert!(!published, "{folder} must say publish = false");
    }
}
