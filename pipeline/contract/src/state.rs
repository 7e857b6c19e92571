//! Encoding of stage snapshots. One compact binary format for every stage (postcard over
//! serde), chosen over JSON because states hold NaN markers that JSON cannot carry.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// Encodes a stage's state.
pub fn encode<T: Serialize>(stage: &str, state: &T) -> Result<Option<Vec<u8>>> {
    postcard::to_stdvec(state)
        .map(Some)
        .map_err(|e| Error::state(stage, format!("cannot encode: {e}")))
}

/// Decodes a state made by [`encode`] for the same stage.
pub fn decode<T: DeserializeOwned>(stage: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| Error::state(stage, format!("snapshot does not decode: {e}")))
}
