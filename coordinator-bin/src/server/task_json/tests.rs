//! Tests of the parsing of submissions.

use serde_json::{json, Value};

use super::parse_submission;

/// Found by the `submit_body` fuzz target: a number in the metadata keeps its
/// value through a submission, and the metadata as the API shows it, submitted
/// again, is the same text (the JSON parser rounds decimals correctly).
#[test]
fn metadata_numbers_keep_their_value() {
    let big = "88888888888800000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000017835642252089651654";
    let body: Value = serde_json::from_str(&format!(
        r#"{{"description": "x", "metadata": {{"short": 8.88888888888e+127, "long": {big}}}}}"#
    ))
    .unwrap();
    let task = parse_submission(&body, "me").unwrap();
    let metadata: Value = serde_json::from_str(&task.metadata).unwrap();
    assert_eq!(metadata["short"].as_f64(), Some(8.88888888888e127));
    assert_eq!(metadata["long"].as_f64(), Some(big.parse::<f64>().unwrap()));
    let again = parse_submission(&json!({"description": "x", "metadata": metadata}), "me").unwrap();
    assert_eq!(again.metadata, task.metadata);
}
