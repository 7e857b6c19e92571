//! Spot prices: the catalog's, refreshed from EC2's DescribeSpotPriceHistory when a source
//! is configured; a failed refresh keeps the prices in use.

use std::time::{Duration, Instant};

use wfe_contract::Context;
use wfe_ec2::{Catalog, Cloud};

use crate::config::SpotPriceSource;

/// The spot prices' source and age.
pub(crate) struct Prices {
    pub(crate) cloud: Option<Box<dyn Cloud>>,
    pub(crate) refreshed: Option<Instant>,
    /// Where the prices in use come from, for the reasons.
    pub(crate) origin: String,
}

/// Seconds since the epoch, UTC, as text (when prices were read).
fn wall_clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("unix {s}")
}

impl Prices {
    /// The catalog snapshot's prices, or `cloud`'s once refreshed.
    pub(crate) fn new(catalog: &Catalog, cloud: Option<Box<dyn Cloud>>) -> Self {
        Self {
            cloud,
            refreshed: None,
            origin: format!("spot prices: catalog snapshot {}", catalog.snapshot),
        }
    }

    /// Refreshes `catalog`'s spot prices from EC2 when a source is configured and the last
    /// refresh is `refresh_s` old; a failure keeps the prices in use and is reported (and
    /// tried again a minute later, not at every batch).
    pub(crate) fn refresh(
        &mut self,
        src: Option<&SpotPriceSource>,
        catalog: &mut Catalog,
        ctx: &mut Context,
    ) {
        let Some(src) = src else {
            return;
        };
        let Some(cloud) = self.cloud.as_mut() else {
            return;
        };
        if self
            .refreshed
            .is_some_and(|t| t.elapsed() < Duration::from_secs(src.refresh_s))
        {
            return;
        }
        let types: Vec<String> = catalog.instance.iter().map(|i| i.r#type.clone()).collect();
        match cloud.spot_prices(&types) {
            Ok(prices) => {
                let mut n = 0;
                for (t, p) in prices {
                    if let Some(i) = catalog.instance.iter_mut().find(|i| i.r#type == t) {
                        i.spot_price = Some(p);
                        n += 1;
                    }
                }
                ctx.count("spot_prices.refreshed", n);
                self.origin = format!(
                    "spot prices: DescribeSpotPriceHistory ({n} of {} types) at {}",
                    types.len(),
                    wall_clock()
                );
                self.refreshed = Some(Instant::now());
            }
            Err(e) => {
                let msg = format!("{e}; keeping the prices in use");
                ctx.reject(
                    "spot_price_refresh_failed",
                    "DescribeSpotPriceHistory",
                    &msg,
                );
                let retry = Duration::from_secs(src.refresh_s.saturating_sub(60));
                self.refreshed = Instant::now().checked_sub(retry);
            }
        }
    }
}
