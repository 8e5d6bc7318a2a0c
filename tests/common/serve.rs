//! `ledger serve` processes for tests: spawn, wait until they answer, kill.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::Value;

/// A `ledger serve` process, killed on drop.
pub struct Serve {
    pub child: Child,
}

impl Serve {
    pub fn spawn(url: &str, data: &Path, clock_interval_ms: u64) -> Serve {
        let child = Command::new(env!("CARGO_BIN_EXE_ledger"))
            .arg("--data")
            .arg(data)
            .arg("--nats")
            .arg(url)
            .arg("serve")
            .arg("--clock-interval-ms")
            .arg(clock_interval_ms.to_string())
            // Tests send only to loopback, webhooks included.
            .args(["--webhook-allow-hosts", "127.0.0.1"])
            .env("LEDGER_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Serve { child }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn with_credentials(url: &str, user: &str, password: &str) -> String {
    url.replacen("nats://", &format!("nats://{user}:{password}@"), 1)
}

/// Waits until `instances` distinct `ledger` services answer `$SRV.PING`.
pub async fn wait_for_service(url: &str, instances: usize) {
    let (address, options) = ledger_client::nats::options(url, "probe", None);
    let client = options.connect(&address).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inbox = client.new_inbox();
        let mut replies = client.subscribe(inbox.clone()).await.unwrap();
        client.publish_with_reply("$SRV.PING.ledger", inbox, "".into()).await.unwrap();
        let mut ids = std::collections::HashSet::new();
        let window = tokio::time::sleep(Duration::from_millis(300));
        tokio::pin!(window);
        loop {
            tokio::select! {
                _ = &mut window => break,
                Some(message) = replies.next() => {
                    // "No responders" arrives as an empty status message.
                    let Ok(ping) = serde_json::from_slice::<Value>(&message.payload) else { continue };
                    assert_eq!(ping["name"], "ledger");
                    ids.insert(ping["id"].as_str().unwrap().to_string());
                }
            }
        }
        if ids.len() >= instances {
            return;
        }
        assert!(Instant::now() < deadline, "{instances} ledger services did not start");
    }
}
