//! Helpers shared by the end-to-end tests: an embedded stack served on a
//! loopback port, and a webhook receiver.

#![allow(dead_code, unreachable_pub)]

use std::{
    net::SocketAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};

use alchemist::stack::{Stack, StackOptions};
use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};

/// The Standard Webhooks secret the tests sign with.
pub const WEBHOOK_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Options for a stack in `dir` that may call webhooks on loopback.
pub fn options(dir: &Path) -> StackOptions {
    StackOptions {
        data_dir: dir.join("data"),
        parallelism: 2,
        convert: alchemist_convert::Config {
            work_dir: dir.to_path_buf(),
            ..Default::default()
        },
        upload: alchemist_upload::Config::default(),
        allow_private_webhooks: true,
        jwt_secret: Some("an-end-to-end-test-secret-of-32-bytes-or-more".to_owned()),
        webhook_secret: Some(WEBHOOK_SECRET.to_owned()),
        resume_queued_jobs: false,
        transient_blobs: false,
    }
}

/// A stack serving its public router on 127.0.0.1 at `base_url`.
pub struct Served {
    pub stack: Arc<Stack>,
    pub base_url: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

pub async fn serve_stack(options: StackOptions) -> Served {
    let stack = Arc::new(Stack::open(options).await.expect("open the embedded stack"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
    let router = stack.public.clone();
    tokio::spawn(async move {
        let _ = alchemist_runtime::serve::serve_listener(router, listener, async move {
            let _ = signal.await;
        })
        .await;
    });
    Served {
        stack,
        base_url: format!("http://{address}"),
        shutdown: Some(shutdown),
    }
}

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An HTTP server on 127.0.0.1 that records every POST and answers 204.
pub struct Receiver {
    pub url: String,
    pub requests: Arc<Mutex<Vec<Received>>>,
}

pub async fn start_receiver() -> Receiver {
    let requests: Arc<Mutex<Vec<Received>>> = Arc::default();
    let router = Router::new()
        .route(
            "/hook",
            post(
                |State(requests): State<Arc<Mutex<Vec<Received>>>>,
                 headers: HeaderMap,
                 body: Bytes| async move {
                    requests.lock().unwrap().push(Received { headers, body });
                    StatusCode::NO_CONTENT
                },
            ),
        )
        .with_state(requests.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Receiver {
        url: format!("http://{address}/hook"),
        requests,
    }
}

impl Receiver {
    /// Waits until `count` requests arrived, for at most `limit`.
    pub async fn wait_for(&self, count: usize, limit: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let requests = self.requests.lock().unwrap().clone();
            if requests.len() >= count || tokio::time::Instant::now() > deadline {
                return requests;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Recomputes a Standard Webhooks signature independently of the product code.
pub fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}
