//! Test support: moto's EC2 server on a free loopback port, for the tests of every crate
//! that calls EC2 (no hand-made fake of EC2 anywhere).

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Ec2, Ec2Settings};

/// A running `moto_server`, stopped on drop.
pub struct Moto {
    child: Child,
    pub url: String,
    pub port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moto_server`: `WFE_MOTO`, else the project venv's (`make test` installs it), else PATH.
fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("WFE_MOTO") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/moto_server");
    if venv.exists() {
        return venv;
    }
    "moto_server".into()
}

impl Moto {
    /// Starts moto and waits until it listens. Panics with what to do when moto is missing:
    /// a test that needs EC2 must not pass without it.
    pub fn start() -> Moto {
        let bin = binary();
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): `make test` installs moto[server] into .venv, or set WFE_MOTO",
                    bin.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto_server did not listen on {port}");
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            port,
        }
    }

    /// A client of this server (moto accepts any credentials).
    pub fn client(&self) -> Ec2 {
        Ec2::with_credentials(
            &Ec2Settings {
                region: "us-east-1".into(),
                endpoint: Some(self.url.clone()),
                max_attempts: 3,
                max_calls_per_s: 1000.0,
            },
            "testing",
            "testing",
        )
        .expect("an EC2 client")
    }
}
