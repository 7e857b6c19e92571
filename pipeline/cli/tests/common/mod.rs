//! Helpers the `wfe` binary's integration tests share.
#![allow(dead_code)] // each test crate uses its own subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs the `wfe` binary built for these tests in `dir`.
pub fn wfe(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wfe"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run wfe")
}

/// `../shared/data` beside the checkout, or `$WFE_DATA`, absolute.
pub fn shared_data() -> PathBuf {
    let data = std::env::var_os("WFE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let data = data.canonicalize().expect("shared data (set WFE_DATA)");
    assert!(data.join("smd").is_dir(), "no smd/ in {}", data.display());
    data
}

/// A loopback port free at the time of asking (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
