use arrow_schema::{DataType, Field, Schema};

use super::*;

#[test]
fn every_schema_names_itself() {
    for t in Topic::ALL {
        let s = t.schema();
        assert_eq!(s.metadata()[META_NAME], t.name());
        assert_eq!(Topic::from_name(t.name()), Some(t));
        check(t, &s).unwrap();
    }
}

#[test]
fn mismatch_names_both_schemas() {
    let err = check(Topic::Forecasts, &Topic::Decisions.schema()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("forecasts v1") && msg.contains("decisions v2"),
        "{msg}"
    );
}

#[test]
fn additive_columns_are_accepted_and_changed_types_are_not() {
    let base = Topic::Actions.schema();
    let mut fields: Vec<Field> = base.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new("extra", DataType::Utf8, true));
    let newer = Schema::new(fields.clone()).with_metadata(base.metadata().clone());
    check(Topic::Actions, &newer).unwrap();

    fields[5] = Field::new("parameters", DataType::Int64, false);
    let wrong = Schema::new(fields).with_metadata(base.metadata().clone());
    let msg = check(Topic::Actions, &wrong).unwrap_err().to_string();
    assert!(msg.contains("`parameters` has type Int64"), "{msg}");
}

#[test]
fn checked_in_description_is_current() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/TOPICS.md");
    let on_disk = std::fs::read_to_string(path).unwrap_or_default();
    if std::env::var_os("WFE_BLESS").is_some() {
        std::fs::write(path, describe_markdown()).unwrap();
        return;
    }
    assert_eq!(
        on_disk,
        describe_markdown(),
        "schemas/TOPICS.md is stale: run `WFE_BLESS=1 cargo test -p wfe-schemas`"
    );
}
