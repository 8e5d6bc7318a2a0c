//! A three-node JetStream cluster for tests, from the configurations shipped
//! in `docs/nats-cluster/` (ports and store directories replaced): client and
//! route ports chosen at random, a store per node, each node killed
//! (SIGKILL) and restarted on its own ports and store.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Node {
    pub name: String,
    pub client_port: u16,
    config: PathBuf,
    child: Option<Child>,
}

pub struct Cluster {
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Cluster {
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/nats-cluster");
        let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let mut text = std::fs::read_to_string(shipped.join(format!("n{}.conf", i + 1))).unwrap();
            for j in 0..3 {
                text = text
                    .replace(&format!("127.0.0.1:{}", 4222 + j), &format!("127.0.0.1:{}", client_ports[j]))
                    .replace(&format!("127.0.0.1:{}", 6222 + j), &format!("127.0.0.1:{}", route_ports[j]));
            }
            let store = dir.path().join(format!("store-n{}", i + 1));
            text = text.replace(&format!("./nats-store-n{}", i + 1), store.to_str().unwrap());
            assert!(text.contains(&client_ports[i].to_string()) && text.contains(store.to_str().unwrap()));
            let config = dir.path().join(format!("n{}.conf", i + 1));
            std::fs::write(&config, text).unwrap();
            nodes.push(Node {
                name: format!("n{}", i + 1),
                client_port: client_ports[i],
                config,
                child: None,
            });
        }
        let mut cluster = Cluster { nodes, _dir: dir };
        for i in 0..3 {
            cluster.start_node(i);
        }
        cluster
    }

    /// Every node's client URL, comma-separated (what `--nats` takes).
    pub fn url(&self) -> String {
        self.nodes.iter().map(|n| format!("nats://127.0.0.1:{}", n.client_port)).collect::<Vec<_>>().join(",")
    }

    pub fn start_node(&mut self, i: usize) {
        let binary = ledger::bench::natsd::binary().unwrap();
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "{} is running", node.name);
        node.child = Some(
            Command::new(binary)
                .arg("-c")
                .arg(&node.config)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", node.client_port)).is_err() {
            assert!(Instant::now() < deadline, "{} did not listen", node.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }
}
