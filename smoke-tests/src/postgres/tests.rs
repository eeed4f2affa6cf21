//! Tests of the test server's URLs.

use super::with_database;

#[test]
fn a_url_gets_the_database_name_replaced_and_keeps_its_options() {
    assert_eq!(
        with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
        "postgres://postgres@127.0.0.1:5432/t1"
    );
    assert_eq!(
        with_database("postgres://u:p@h/db?sslmode=disable", "t2"),
        "postgres://u:p@h/t2?sslmode=disable"
    );
    assert_eq!(
        with_database("postgres://u@h:1", "t3"),
        "postgres://u@h:1/t3"
    );
}
