//! # wfe-numeric: numerical methods the stages share
//!
//! One implementation per idea, in one place, so that two stages cannot drift apart:
//! - [`pca`]: the principal axes of a set of rows, behind the anomaly stage's reconstruction
//!   model and the fingerprint stage's basis.
//!
//! (The seeded generator and reservoir sampling are `wfe_domain::stats::SplitMix`: stages
//! without linear algebra use them too.)

pub mod pca;
