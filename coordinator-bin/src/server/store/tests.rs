//! Tests of the storage seam: which store a `--db` value names.

use std::path::{Path, PathBuf};

use super::Location;

#[test]
fn a_postgres_url_names_the_postgres_store_and_anything_else_a_sqlite_file() {
    assert_eq!(
        Location::of(Path::new("postgres://u@h:5432/d")),
        Location::Postgres("postgres://u@h:5432/d".into())
    );
    assert_eq!(
        Location::of(Path::new("postgresql://u@h/d")),
        Location::Postgres("postgresql://u@h/d".into())
    );
    assert_eq!(
        Location::of(Path::new("./coordinator.db")),
        Location::Sqlite(PathBuf::from("./coordinator.db"))
    );
    assert_eq!(
        Location::of(Path::new("postgres.db")),
        Location::Sqlite(PathBuf::from("postgres.db"))
    );
}
