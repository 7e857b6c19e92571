//! Typed access to batch columns, with errors that name the column and the schema instead of
//! panicking on a failed downcast.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, BooleanArray, DictionaryArray, Float64Array, Int64Array, RecordBatch,
    StringArray, TimestampMillisecondArray,
};

use crate::{Error, Result};

fn col<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch.column_by_name(name).ok_or_else(|| {
        Error::bad_input(
            wfe_schemas::schema_label(&batch.schema()),
            format!("no column `{name}`"),
        )
    })
}

fn wrong(batch: &RecordBatch, name: &str, want: &str) -> Error {
    let dt = batch
        .column_by_name(name)
        .map(|c| c.data_type().to_string())
        .unwrap_or_default();
    Error::bad_input(
        wfe_schemas::schema_label(&batch.schema()),
        format!("column `{name}` is {dt}, expected {want}"),
    )
}

pub fn f64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Float64Array> {
    col(batch, name)?
        .as_primitive_opt()
        .ok_or_else(|| wrong(batch, name, "Float64"))
}

pub fn i64s<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a Int64Array> {
    col(batch, name)?
        .as_primitive_opt()
        .ok_or_else(|| wrong(batch, name, "Int64"))
}

pub fn bools<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a BooleanArray> {
    col(batch, name)?
        .as_boolean_opt()
        .ok_or_else(|| wrong(batch, name, "Boolean"))
}

pub fn strings<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a StringArray> {
    col(batch, name)?
        .as_string_opt::<i32>()
        .ok_or_else(|| wrong(batch, name, "Utf8"))
}

pub fn timestamps<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a TimestampMillisecondArray> {
    col(batch, name)?
        .as_primitive_opt::<TimestampMillisecondType>()
        .ok_or_else(|| wrong(batch, name, "Timestamp(ms)"))
}

/// A dictionary-encoded string column: per-row keys into a small table of values.
pub struct DictStrings<'a> {
    array: &'a DictionaryArray<Int32Type>,
    values: &'a StringArray,
}

impl<'a> DictStrings<'a> {
    pub fn new(batch: &'a RecordBatch, name: &str) -> Result<Self> {
        let array = col(batch, name)?
            .as_dictionary_opt::<Int32Type>()
            .ok_or_else(|| wrong(batch, name, "Dictionary(Int32, Utf8)"))?;
        let values = array
            .values()
            .as_string_opt::<i32>()
            .ok_or_else(|| wrong(batch, name, "Dictionary(Int32, Utf8)"))?;
        Ok(Self { array, values })
    }

    /// The dictionary key of each row (null rows have key 0 and `is_null` true).
    pub fn keys(&self) -> &'a [i32] {
        self.array.keys().values()
    }

    pub fn is_null(&self, row: usize) -> bool {
        self.array.is_null(row)
    }

    /// The distinct values, indexed by key.
    pub fn dictionary(&self) -> &'a StringArray {
        self.values
    }

    /// The string of one row, `None` if null.
    pub fn get(&self, row: usize) -> Option<&'a str> {
        if self.array.is_null(row) {
            return None;
        }
        let key = self.keys()[row] as usize;
        (key < self.values.len()).then(|| self.values.value(key))
    }
}

/// Builds a dictionary column from per-row keys and its values.
pub fn dictionary(keys: Vec<i32>, values: &[&str]) -> Result<ArrayRef> {
    let keys = arrow_array::Int32Array::from(keys);
    let values = Arc::new(StringArray::from_iter_values(values.iter()));
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        keys, values,
    )?))
}

/// A dictionary column whose values are an array already made (e.g. [`crate::norm::Slots::array`]):
/// batches that share it share one dictionary.
pub fn shared_dictionary(keys: Vec<i32>, values: ArrayRef) -> Result<ArrayRef> {
    let keys = arrow_array::Int32Array::from(keys);
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        keys, values,
    )?))
}

/// [`shared_dictionary`] with null rows.
pub fn shared_dictionary_opt(keys: Vec<Option<i32>>, values: ArrayRef) -> Result<ArrayRef> {
    let keys = arrow_array::Int32Array::from(keys);
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        keys, values,
    )?))
}

/// Builds a nullable dictionary column from per-row optional keys.
pub fn dictionary_opt(keys: Vec<Option<i32>>, values: &[&str]) -> Result<ArrayRef> {
    let keys = arrow_array::Int32Array::from(keys);
    let values = Arc::new(StringArray::from_iter_values(values.iter()));
    Ok(Arc::new(DictionaryArray::<Int32Type>::try_new(
        keys, values,
    )?))
}

/// A UTC millisecond timestamp column.
pub fn timestamp_column(ms: Vec<i64>) -> ArrayRef {
    Arc::new(TimestampMillisecondArray::from(ms).with_timezone(wfe_schemas::TZ))
}

/// A list column of primitive values; `None` rows are null.
fn list_of<T: arrow_array::ArrowPrimitiveType>(
    rows: impl IntoIterator<Item = Option<Vec<T::Native>>>,
) -> ArrayRef {
    let rows = rows.into_iter().map(|r| r.map(|r| r.into_iter().map(Some)));
    Arc::new(arrow_array::ListArray::from_iter_primitive::<T, _, _>(rows))
}

/// A list column of `f64`s.
pub fn list_f64(rows: impl IntoIterator<Item = Vec<f64>>) -> ArrayRef {
    list_of::<arrow_array::types::Float64Type>(rows.into_iter().map(Some))
}

/// A list column of `f64`s; `None` rows are null.
pub fn list_f64_opt(rows: impl IntoIterator<Item = Option<Vec<f64>>>) -> ArrayRef {
    list_of::<arrow_array::types::Float64Type>(rows)
}

/// A list column of `f32`s.
pub fn list_f32(rows: impl IntoIterator<Item = Vec<f32>>) -> ArrayRef {
    list_of::<arrow_array::types::Float32Type>(rows.into_iter().map(Some))
}

/// A nullable list column of `f32`s; `None` rows are null.
pub fn list_f32_opt(rows: impl IntoIterator<Item = Option<Vec<f32>>>) -> ArrayRef {
    list_of::<arrow_array::types::Float32Type>(rows)
}

/// A list column of strings; `None` rows are null.
pub fn list_str(rows: impl IntoIterator<Item = Option<Vec<String>>>) -> ArrayRef {
    let mut b = arrow_array::builder::ListBuilder::new(arrow_array::builder::StringBuilder::new());
    for row in rows {
        match row {
            Some(items) => {
                for s in items {
                    b.values().append_value(s);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

/// Reads a list<f64> row into a Vec (a null row is empty, null items NaN).
pub fn list_row_f64(array: &dyn Array, row: usize) -> Result<Vec<f64>> {
    list_row_float::<arrow_array::types::Float64Type>(array, row, f64::NAN, "list<float64>")
}

/// Reads a list<f32> row into a Vec (a null row is empty, null items NaN).
pub fn list_row_f32(array: &dyn Array, row: usize) -> Result<Vec<f32>> {
    list_row_float::<arrow_array::types::Float32Type>(array, row, f32::NAN, "list<float32>")
}

/// Row `row` of a list column: its values, or None where the row is null.
fn list_values(array: &dyn Array, row: usize) -> Result<Option<ArrayRef>> {
    let list = array
        .as_list_opt::<i32>()
        .ok_or_else(|| Error::bad_input(format!("row {row}"), "expected a list column"))?;
    Ok((!list.is_null(row)).then(|| list.value(row)))
}

fn list_row_float<T: arrow_array::ArrowPrimitiveType>(
    array: &dyn Array,
    row: usize,
    nan: T::Native,
    expected: &str,
) -> Result<Vec<T::Native>> {
    let Some(values) = list_values(array, row)? else {
        return Ok(Vec::new());
    };
    let values = values
        .as_primitive_opt::<T>()
        .ok_or_else(|| Error::bad_input(format!("row {row}"), format!("expected {expected}")))?;
    Ok(values.iter().map(|v| v.unwrap_or(nan)).collect())
}

/// One row of a `list<string>` column as owned strings (nulls in the list left out; a null
/// row is empty).
pub fn list_row_str(array: &dyn Array, row: usize) -> Result<Vec<String>> {
    let Some(values) = list_values(array, row)? else {
        return Ok(Vec::new());
    };
    let values = values
        .as_string_opt::<i32>()
        .ok_or_else(|| Error::bad_input(format!("row {row}"), "expected list<string>"))?;
    Ok(values.iter().flatten().map(str::to_string).collect())
}
