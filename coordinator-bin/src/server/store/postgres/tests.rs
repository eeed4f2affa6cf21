//! Tests of the PostgreSQL writer's pure parts (its statements run against a
//! server in the smoke tests).

use super::UPDATE_COLUMNS;

#[test]
fn an_update_leaves_what_was_fixed_at_submission() {
    for fixed in [
        "id",
        "description",
        "metadata",
        "priority",
        "max_retries",
        "complete_by",
        "needed_capabilities",
        "submitted_by",
        "created_at",
        "run_at",
        "depends_on",
        "idempotency_key",
    ] {
        assert!(!UPDATE_COLUMNS.contains(&fixed), "{fixed}");
    }
}
