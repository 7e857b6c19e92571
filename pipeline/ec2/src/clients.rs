//! AWS clients built once per process and handed to the stages that need them.
//!
//! EC2 limits API requests per account and region, not per caller: two stages of one process
//! that each built a client (tier-select reading spot prices, the actuator launching) would
//! each keep a rate limit of their own and together pass the one that counts. [`Clients`]
//! keeps one [`Ec2`] per region and endpoint; every stage asking for it gets a handle to the
//! same client (its calls take turns, behind one rate limit and one connection pool). The
//! first request for a region and endpoint decides its retries and rate (the composition
//! root asks for the actuator's, whose settings a user configures, first).

use std::sync::{Arc, Mutex, MutexGuard};

use wfe_contract::Result;

use crate::cloud::{Cloud, Launch, Running};
use crate::ec2::Ec2;
use crate::sdk::Ec2Settings;

/// Builds an EC2 client for given settings: how a stage gets its client from whoever composes
/// the process ([`Clients::ec2`], or [`Ec2::connect`] alone).
pub type Connect<'a> = &'a mut dyn FnMut(&Ec2Settings) -> Result<Box<dyn Cloud>>;

/// The process's EC2 clients, one per region and endpoint.
#[derive(Default)]
pub struct Clients {
    ec2: Vec<(Key, Arc<Mutex<Ec2>>)>,
    /// Fixed credentials for every client (tests against moto); none: the standard chain.
    credentials: Option<(String, String)>,
}

/// What makes two clients the same: where their requests go.
type Key = (String, Option<String>);

impl Clients {
    /// Clients on the standard credential chain.
    pub fn new() -> Self {
        Self::default()
    }

    /// Clients with fixed credentials (tests against moto, which accepts any).
    pub fn with_credentials(key: &str, secret: &str) -> Self {
        Self {
            ec2: Vec::new(),
            credentials: Some((key.to_string(), secret.to_string())),
        }
    }

    /// A handle to the EC2 client of `s`'s region and endpoint, connected on first use.
    pub fn ec2(&mut self, s: &Ec2Settings) -> Result<Box<dyn Cloud>> {
        let key = (s.region.clone(), s.endpoint.clone());
        if let Some((_, c)) = self.ec2.iter().find(|(k, _)| *k == key) {
            return Ok(Box::new(Arc::clone(c)));
        }
        let client = match &self.credentials {
            Some((k, secret)) => Ec2::with_credentials(s, k, secret)?,
            None => Ec2::connect(s)?,
        };
        let shared = Arc::new(Mutex::new(client));
        self.ec2.push((key, Arc::clone(&shared)));
        Ok(Box::new(shared))
    }

    /// How many EC2 clients have been built.
    pub fn len(&self) -> usize {
        self.ec2.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ec2.is_empty()
    }
}

/// A client's lock; one poisoned by a panic elsewhere is taken over (it holds a connection
/// pool and the time of the last call, nothing a half-done call leaves inconsistent).
fn lock<C: ?Sized>(c: &Mutex<C>) -> MutexGuard<'_, C> {
    c.lock().unwrap_or_else(|p| p.into_inner())
}

impl<C: Cloud + ?Sized> Cloud for Arc<Mutex<C>> {
    fn launch(&mut self, req: &Launch, dry_run: bool) -> Result<Vec<String>> {
        lock(self).launch(req, dry_run)
    }

    fn terminate(&mut self, ids: &[String], dry_run: bool) -> Result<Vec<String>> {
        lock(self).terminate(ids, dry_run)
    }

    fn describe(&mut self, workload: &str) -> Result<Vec<Running>> {
        lock(self).describe(workload)
    }

    fn spot_prices(&mut self, types: &[String]) -> Result<Vec<(String, f64)>> {
        lock(self).spot_prices(types)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Moto;

    fn settings(endpoint: &str, region: &str) -> Ec2Settings {
        Ec2Settings {
            region: region.into(),
            endpoint: Some(endpoint.into()),
            max_attempts: 3,
            max_calls_per_s: 1000.0,
        }
    }

    #[test]
    fn one_client_per_region_and_endpoint_shared_by_whoever_asks() {
        let moto = Moto::start();
        let mut clients = Clients::with_credentials("testing", "testing");
        let mut a = clients.ec2(&settings(&moto.url, "us-east-1")).unwrap();
        let mut b = clients.ec2(&settings(&moto.url, "us-east-1")).unwrap();
        assert_eq!(clients.len(), 1, "the same region and endpoint: one client");
        // Both handles reach EC2 through it.
        let types = vec!["m5.large".to_string()];
        assert!(!a.spot_prices(&types).unwrap().is_empty());
        assert!(!b.spot_prices(&types).unwrap().is_empty());
        assert_eq!(b.describe("nobody").unwrap(), vec![]);
        // Another region is another client.
        let mut c = clients.ec2(&settings(&moto.url, "eu-west-1")).unwrap();
        assert_eq!(clients.len(), 2);
        assert!(!c.spot_prices(&types).unwrap().is_empty());
    }
}
