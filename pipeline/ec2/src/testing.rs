//! Test support: moto's EC2 server on a free loopback port, for the tests of every crate
//! that calls EC2 (no hand-made fake of EC2 anywhere).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Ec2, Ec2Settings, Sqs};

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
    /// Starts moto on a port of its own choosing (port 0: no race with other tests for a
    /// free port) and reads the port from its banner. Panics with what to do when moto is
    /// missing: a test that needs EC2 must not pass without it.
    pub fn start() -> Moto {
        let bin = binary();
        let mut child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): `make test` installs moto[server] into .venv, or set WFE_MOTO",
                    bin.display()
                )
            });
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        // Werkzeug's banner names the port; the rest (a line per request) is drained so that
        // moto never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(|l| l.ok()) {
                if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                    let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    if let (Some(t), Ok(p)) = (tx.take(), port.parse::<u16>()) {
                        let _ = t.send(p);
                    }
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "moto_server ({}) did not say where it listens",
                    bin.display()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
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

    fn settings(&self) -> Ec2Settings {
        Ec2Settings {
            region: "us-east-1".into(),
            endpoint: Some(self.url.clone()),
            max_attempts: 3,
            max_calls_per_s: 1000.0,
        }
    }

    /// Creates an SQS queue on this server and returns its URL.
    pub fn queue(&self, name: &str) -> String {
        Sqs::create_queue(&self.settings(), name, "testing", "testing").expect("an SQS queue")
    }

    /// A reader (and, for the tests, writer) of one of its queues.
    pub fn notices(&self, queue_url: &str) -> Sqs {
        Sqs::with_credentials(&self.settings(), queue_url, "testing", "testing")
            .expect("an SQS client")
    }
}
