//! A `wfe run ... --hold` process the test started: its log, waiting for a line of it, and
//! the process killed when the test ends however it ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Held {
    pub child: Child,
    pub log: PathBuf,
}

impl Held {
    /// Starts the `wfe` binary of these tests in `dir` with `args` and `env`; its stderr is
    /// `dir/wfe.log`, its stdout `dir/wfe.out`.
    pub fn spawn(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let log = dir.join("wfe.log");
        let child = Command::new(env!("CARGO_BIN_EXE_wfe"))
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info,hnsw_rs=warn")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(dir.join("wfe.out")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("wfe");
        Self { child, log }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for a line of the log containing `what`; returns that line.
    pub fn wait_for(&mut self, what: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| l.contains(what)) {
                return line.to_string();
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("wfe exited ({status}) before `{what}`:\n{log}");
            }
            assert!(
                start.elapsed() < limit,
                "no `{what}` after {limit:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The address printed after `prefix` on the first log line that has it
    /// (`http: serving on http://ADDR/`, `keda: serving on ADDR`).
    pub fn address_after(&mut self, prefix: &str, limit: Duration) -> String {
        let line = self.wait_for(prefix, limit);
        line.split(prefix)
            .nth(1)
            .and_then(|s| s.split(['/', ' ']).next())
            .unwrap_or_else(|| panic!("no address in `{line}`"))
            .to_string()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
