//! The checked-in JSON Schema is the one the types generate.

use std::path::PathBuf;

/// `docs/report.schema.json` at the workspace root.
fn schema_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/report.schema.json")
}

#[test]
fn checked_in_schema_is_current() {
    let generated = serde_json::to_string_pretty(&muster_proto::report_schema()).unwrap() + "\n";
    let path = schema_path();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/report.schema.json is stale: run `UPDATE_SCHEMA=1 cargo test -p muster-proto` \
         and commit the result"
    );
}

#[test]
fn schema_ties_each_function_name_to_its_item_type() {
    let schema = muster_proto::report_schema();
    let function = &schema["$defs"]["FunctionReport"];
    let variants = function["oneOf"]
        .as_array()
        .expect("FunctionReport has oneOf variants");
    let names: Vec<&str> = variants
        .iter()
        .map(|v| v["properties"]["name"]["const"].as_str().unwrap())
        .collect();
    assert_eq!(names, muster_proto::FunctionData::NAMES);
    let cpu = variants
        .iter()
        .find(|v| v["properties"]["name"]["const"] == "cpu")
        .unwrap();
    assert_eq!(cpu["properties"]["data"]["items"]["$ref"], "#/$defs/Cpu");
    for field in [
        "model",
        "vendor",
        "sockets",
        "physical_cores",
        "logical_cpus",
        "max_mhz",
    ] {
        assert!(
            schema["$defs"]["Cpu"]["properties"][field].is_object(),
            "Cpu.{field}"
        );
    }
}
