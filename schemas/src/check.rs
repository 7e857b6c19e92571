//! Checking a batch's schema against its topic's, at every edge: the same columns in order,
//! of matching types (a newer version's extra trailing columns allowed).

use arrow_schema::{DataType, Schema};

use crate::topic::{META_NAME, META_VERSION, Topic};

/// Why a batch does not fit a topic's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaMismatch {
    pub expected: String,
    pub found: String,
    pub detail: String,
}

impl std::fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "schema mismatch: expected {}, found {}: {}",
            self.expected, self.found, self.detail
        )
    }
}

impl std::error::Error for SchemaMismatch {}

/// `name vN` of a schema, from its metadata, or a short field list when it has none.
pub fn schema_label(schema: &Schema) -> String {
    match (
        schema.metadata().get(META_NAME),
        schema.metadata().get(META_VERSION),
    ) {
        (Some(n), Some(v)) => format!("{n} v{v}"),
        _ => {
            let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            format!("unnamed schema ({})", names.join(", "))
        }
    }
}

/// Checks that `found` is the schema of `topic` (same name, a version this build reads, and
/// the declared columns with their types). Extra trailing columns from a newer version of the
/// same topic are accepted: changes are additive.
pub fn check(topic: Topic, found: &Schema) -> Result<(), SchemaMismatch> {
    let expected = topic.schema();
    let mismatch = |detail: String| SchemaMismatch {
        expected: schema_label(&expected),
        found: schema_label(found),
        detail,
    };
    match found.metadata().get(META_NAME) {
        Some(n) if n == topic.name() => {}
        Some(n) => {
            return Err(mismatch(format!(
                "topic name is `{n}`, not `{}`",
                topic.name()
            )));
        }
        None => return Err(mismatch(format!("no `{META_NAME}` metadata"))),
    }
    let version: u32 = found
        .metadata()
        .get(META_VERSION)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| mismatch(format!("missing or non-numeric `{META_VERSION}`")))?;
    if version < topic.version() {
        return Err(mismatch(format!(
            "version {version} is older than {} read here",
            topic.version()
        )));
    }
    if found.fields().len() < expected.fields().len() {
        return Err(mismatch(format!(
            "{} columns, expected at least {}",
            found.fields().len(),
            expected.fields().len()
        )));
    }
    for (i, (e, g)) in expected
        .fields()
        .iter()
        .zip(found.fields().iter())
        .enumerate()
    {
        if e.name() != g.name() {
            return Err(mismatch(format!(
                "column {i} is `{}`, expected `{}`",
                g.name(),
                e.name()
            )));
        }
        if !types_match(e.data_type(), g.data_type()) {
            return Err(mismatch(format!(
                "column `{}` has type {}, expected {}",
                e.name(),
                g.data_type(),
                e.data_type()
            )));
        }
        if g.is_nullable() && !e.is_nullable() {
            return Err(mismatch(format!(
                "column `{}` is nullable, expected non-null",
                e.name()
            )));
        }
    }
    Ok(())
}

/// Types match ignoring list item field names and nullability (writers differ on those).
fn types_match(expected: &DataType, found: &DataType) -> bool {
    match (expected, found) {
        (DataType::List(a), DataType::List(b)) => types_match(a.data_type(), b.data_type()),
        _ => expected == found,
    }
}
