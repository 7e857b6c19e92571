//! Settings an operator changes while the pipeline runs (through the HTTP API's token-guarded
//! endpoints), read by the stage that registered them.
//!
//! A stage registers a setting in [`Stage::on_start`](crate::Stage::on_start) with its current
//! value and the values it can take *now* (the actuator offers `dry-run` and `apply` only when
//! it has an EC2 client), and reads it at the start of each batch: a change applies from the
//! next batch on, never in the middle of one. The runner shares one [`Control`] between all
//! its stages' [`Context`](crate::Context)s and the API.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::Serialize;

/// One setting.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Setting {
    pub value: String,
    /// The values it may be set to.
    pub allowed: Vec<String>,
    /// What it does, for the API's listing.
    pub doc: String,
}

/// Why a setting could not be changed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ControlError {
    #[error("no setting `{0}` (settings: {1})")]
    Unknown(String, String),
    #[error("`{name}` cannot be `{value}`: allowed {allowed:?}")]
    NotAllowed {
        name: String,
        value: String,
        allowed: Vec<String>,
    },
}

/// The settings of a running pipeline.
#[derive(Debug, Default)]
pub struct Control {
    settings: Mutex<BTreeMap<String, Setting>>,
}

impl Control {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Setting>> {
        self.settings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers (or re-registers, after a restart of the stage) a setting.
    pub fn register(&self, name: &str, value: &str, allowed: &[&str], doc: &str) {
        self.lock().insert(
            name.to_string(),
            Setting {
                value: value.to_string(),
                allowed: allowed.iter().map(|s| s.to_string()).collect(),
                doc: doc.to_string(),
            },
        );
    }

    /// The setting's current value.
    pub fn get(&self, name: &str) -> Option<String> {
        self.lock().get(name).map(|s| s.value.clone())
    }

    /// Changes a setting; returns its previous value.
    pub fn set(&self, name: &str, value: &str) -> Result<String, ControlError> {
        let mut settings = self.lock();
        let names = settings.keys().cloned().collect::<Vec<_>>().join(", ");
        let Some(s) = settings.get_mut(name) else {
            return Err(ControlError::Unknown(name.to_string(), names));
        };
        if !s.allowed.iter().any(|a| a == value) {
            return Err(ControlError::NotAllowed {
                name: name.to_string(),
                value: value.to_string(),
                allowed: s.allowed.clone(),
            });
        }
        Ok(std::mem::replace(&mut s.value, value.to_string()))
    }

    /// Every setting, by name.
    pub fn list(&self) -> BTreeMap<String, Setting> {
        self.lock().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_change_only_to_allowed_values() {
        let c = Control::new();
        c.register("actuate.mode", "dry-run", &["dry-run", "apply"], "mode");
        assert_eq!(c.set("actuate.mode", "apply"), Ok("dry-run".to_string()));
        assert_eq!(c.get("actuate.mode").as_deref(), Some("apply"));
        let e = c.set("actuate.mode", "record-only").unwrap_err();
        assert!(e.to_string().contains("allowed"), "{e}");
        assert_eq!(c.get("actuate.mode").as_deref(), Some("apply"));
        let e = c.set("nope", "x").unwrap_err();
        assert_eq!(e.to_string(), "no setting `nope` (settings: actuate.mode)");
    }
}
