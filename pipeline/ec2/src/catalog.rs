//! The tier catalog: instance types with capacity, prices and spot risk.

use std::path::Path;

use serde::Deserialize;
use wfe_contract::{Error, Result};

const SHIPPED: &str = include_str!("../catalog/aws-us-east-1.toml");

/// Instance types of one region.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub region: String,
    /// Date the prices were taken.
    pub snapshot: String,
    pub instance: Vec<Instance>,
}

/// One instance type.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    pub r#type: String,
    /// Tier when bought on demand: `on-demand` or `high-performance`.
    pub family_tier: String,
    pub vcpu: f64,
    pub memory_gib: f64,
    pub network_gbps: f64,
    /// USD per hour on demand.
    pub on_demand_price: f64,
    /// USD per hour as spot; absent when the type is not offered as spot.
    #[serde(default)]
    pub spot_price: Option<f64>,
    /// Probability per hour that a spot instance is interrupted.
    #[serde(default)]
    pub interruption_rate: f64,
    /// Work per unit of capacity relative to the reference (1.0).
    pub performance: f64,
}

impl Instance {
    /// Capacity of one instance in a forecast unit; `None` for a unit it does not measure.
    pub fn capacity(&self, unit: &str) -> Option<f64> {
        match unit {
            "vcpu" => Some(self.vcpu),
            "gib" => Some(self.memory_gib),
            "gbps" => Some(self.network_gbps),
            _ => None,
        }
    }

    /// The ways to buy it: (tier, price per hour, interruption rate per hour).
    pub fn markets(&self) -> Vec<(&str, f64, f64)> {
        let mut m = vec![(self.family_tier.as_str(), self.on_demand_price, 0.0)];
        if let Some(p) = self.spot_price {
            m.push(("spot", p, self.interruption_rate));
        }
        m
    }
}

impl Catalog {
    /// The instance type named `name`.
    pub fn get(&self, name: &str) -> Option<&Instance> {
        self.instance.iter().find(|i| i.r#type == name)
    }

    /// What `count` instances of `name`, `spot` of them as spot, cost per hour at this
    /// snapshot's prices (spot at the on-demand price where the type has no spot price);
    /// `None` for a type the catalog does not list.
    pub fn price_per_hour(&self, name: &str, count: i64, spot: i64) -> Option<f64> {
        let i = self.get(name)?;
        let spot_price = i.spot_price.unwrap_or(i.on_demand_price);
        Some(spot as f64 * spot_price + (count - spot) as f64 * i.on_demand_price)
    }

    /// The snapshot shipped with wfe.
    pub fn shipped() -> Result<Self> {
        Self::parse(SHIPPED, "shipped catalog")
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::io(path.display().to_string(), e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and checks a catalog: an empty one, a missing or non-positive price or capacity
    /// is an error naming the instance type.
    pub fn parse(text: &str, origin: &str) -> Result<Self> {
        let cat: Catalog =
            toml::from_str(text).map_err(|e| Error::config(origin, e.to_string()))?;
        if cat.instance.is_empty() {
            return Err(Error::config(origin, "catalog lists no instance types"));
        }
        for i in &cat.instance {
            let ok = |v: f64| v.is_finite() && v > 0.0;
            if !(ok(i.vcpu) && ok(i.memory_gib) && ok(i.network_gbps) && ok(i.performance)) {
                return Err(Error::config(
                    format!("{origin}: {}", i.r#type),
                    "capacity and performance must be positive",
                ));
            }
            if !ok(i.on_demand_price) || i.spot_price.is_some_and(|p| !ok(p)) {
                return Err(Error::config(
                    format!("{origin}: {}", i.r#type),
                    "prices must be positive",
                ));
            }
            if !(0.0..1.0).contains(&i.interruption_rate) {
                return Err(Error::config(
                    format!("{origin}: {}", i.r#type),
                    "interruption_rate must be in [0, 1)",
                ));
            }
        }
        Ok(cat)
    }
}
