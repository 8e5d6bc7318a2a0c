//! `ledger serve --http` processes for tests, and a real HTTP client
//! (hyper's pooled keep-alive client) to talk to them.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A `ledger serve --http 127.0.0.1:0` process (plus NATS when `nats` is
/// given), killed on drop; `base` is the address it logged.
pub struct HttpServe {
    pub child: Child,
    pub base: String,
}

impl HttpServe {
    pub fn spawn(data: &Path, nats: Option<&str>) -> HttpServe {
        // Tests send only to loopback, webhooks included.
        HttpServe::spawn_with(data, nats, &["--webhook-allow-hosts", "127.0.0.1"])
    }

    /// With these webhook options instead (`--webhook-allow-hosts`,
    /// `--webhook-allow-private`).
    pub fn spawn_with(data: &Path, nats: Option<&str>, webhooks: &[&str]) -> HttpServe {
        let mut command = Command::new(env!("CARGO_BIN_EXE_ledger"));
        command.arg("--data").arg(data);
        if let Some(url) = nats {
            command.arg("--nats").arg(url);
        }
        let mut child = command
            .args(["serve", "--http", "127.0.0.1:0", "--clock-interval-ms", "3600000"])
            .args(webhooks)
            .env("LEDGER_LOG", "info")
            .env_remove("LEDGER_HTTP")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Readiness is the log line naming the bound address; the rest of
        // the log is passed on to the test's output.
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let base = loop {
            let line = lines.next().expect("serve exited before serving HTTP").unwrap();
            eprintln!("{line}");
            if let Some(at) = line.find("serving ledger HTTP on ") {
                break line[at + "serving ledger HTTP on ".len()..].trim().to_string();
            }
        };
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(|line| eprintln!("{line}")));
        HttpServe { child, base }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for HttpServe {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An answer: status, headers, and the body as JSON (`Value::String` for
/// a body that is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body of a problem answer, after checking it is one.
    pub fn problem(&self, status: u16, code: &str) -> &Value {
        assert_eq!(self.status, status, "{:?}", self.body);
        assert_eq!(self.header("content-type"), Some("application/problem+json"), "{:?}", self.body);
        assert_eq!(self.body["code"], code, "{:?}", self.body);
        assert_eq!(self.body["type"], format!("urn:ledger:{code}"));
        assert_eq!(self.body["status"], status);
        assert!(self.body["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert!(self.body["detail"].as_str().is_some_and(|t| !t.is_empty()));
        &self.body
    }
}

/// A keep-alive HTTP/1.1 client bound to one server.
#[derive(Clone)]
pub struct Http {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<bytes::Bytes>>,
}

impl Http {
    pub fn new(base: &str) -> Http {
        Http { base: base.to_string(), client: Client::builder(TokioExecutor::new()).build_http() }
    }

    pub async fn send(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Answer {
        let content_type: Vec<(&str, &str)> = content_type.map(|t| ("content-type", t)).into_iter().collect();
        self.send_with(method, path, key, &content_type, body).await
    }

    /// A request with these headers (beside the key's `Authorization`).
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Answer {
        let mut request = hyper::Request::builder().method(method).uri(format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Full::new(bytes::Bytes::from(body))).unwrap();
        let response = tokio::time::timeout(Duration::from_secs(30), self.client.request(request))
            .await
            .expect("an answer within 30 s")
            .unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        Answer { status, headers, body }
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Answer {
        self.send("GET", path, key, None, Vec::new()).await
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &Value) -> Answer {
        self.send("POST", path, key, Some("application/json"), serde_json::to_vec(body).unwrap()).await
    }
}

/// `ledger keys add ARGS...` in `data`: the printed key.
pub fn add_key(data: &Path, args: &[&str]) -> String {
    add_key_to(data, None, args)
}

/// `ledger keys add ARGS...` in `data`, or with `--nats` in the JetStream
/// ledger's bucket: the printed key.
pub fn add_key_to(data: &Path, nats: Option<&str>, args: &[&str]) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ledger"));
    command.arg("--data").arg(data).env_remove("LEDGER_NATS");
    if let Some(url) = nats {
        command.arg("--nats").arg(url);
    }
    let out = command.arg("keys").arg("add").args(args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8(out.stdout).unwrap();
    assert_eq!(key.lines().count(), 1, "the key alone on stdout");
    key.trim().to_string()
}
