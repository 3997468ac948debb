//! The HTTP endpoints of the long-running roles on `--metrics-addr`: Prometheus text on
//! `/metrics`, liveness on `/healthz` and readiness on `/readyz` (Kubernetes probes).

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, service::service_fn};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const STARTING: u8 = 0;
const READY: u8 = 1;
const DRAINING: u8 = 2;

/// What `/readyz` answers: 503 while starting (not yet connected) and while draining
/// (SIGTERM received: finishing the lease in hand, claiming no more), 200 in between.
#[derive(Debug, Default)]
pub struct Health {
    state: AtomicU8,
}

impl Health {
    /// Connected and serving.
    pub fn ready(&self) {
        let _ = self
            .state
            .compare_exchange(STARTING, READY, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// Stopping: readiness fails from now on.
    pub fn draining(&self) {
        self.state.store(DRAINING, Ordering::SeqCst);
    }

    fn readiness(&self) -> (StatusCode, &'static str) {
        match self.state.load(Ordering::SeqCst) {
            READY => (StatusCode::OK, "ready\n"),
            DRAINING => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
        }
    }
}

/// Installs the Prometheus recorder and serves the endpoints on `addr`, when given;
/// without it metrics are not recorded and there is nothing to probe. Binding happens
/// before this returns, so a taken address is an error at start.
pub fn serve(addr: Option<SocketAddr>) -> anyhow::Result<Arc<Health>> {
    let health = Arc::new(Health::default());
    let Some(addr) = addr else {
        return Ok(health);
    };
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("--metrics-addr {addr}: cannot listen: {e}"))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    // Durations are histograms (buckets add up across worker pods; summaries do not).
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".to_owned()),
            &[
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                1800.0, 3600.0,
            ],
        )
        .map_err(|e| anyhow::anyhow!("metric buckets: {e}"))?
        .install_recorder()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    {
        // Histograms and idle series are maintained on the side.
        let handle = handle.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                handle.run_upkeep();
            }
        });
    }
    let served = Arc::clone(&health);
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "accepting a metrics connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handle = handle.clone();
            let health = Arc::clone(&served);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let response = respond(&request, &handle, &health);
                    async move { Ok::<_, Infallible>(response) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection ended");
                }
            });
        }
    });
    Ok(health)
}

fn respond(
    request: &Request<Incoming>,
    metrics: &PrometheusHandle,
    health: &Health,
) -> Response<Full<Bytes>> {
    let text = |status: StatusCode, body: String, content_type: &str| {
        Response::builder()
            .status(status)
            .header("content-type", content_type)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    const PLAIN: &str = "text/plain; charset=utf-8";
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "GET only\n".to_owned(),
            PLAIN,
        );
    }
    match request.uri().path() {
        "/metrics" => text(
            StatusCode::OK,
            metrics.render(),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/healthz" => text(StatusCode::OK, "ok\n".to_owned(), PLAIN),
        "/readyz" => {
            let (status, body) = health.readiness();
            text(status, body.to_owned(), PLAIN)
        }
        other => text(
            StatusCode::NOT_FOUND,
            format!("{other}: not found (try /metrics, /healthz, /readyz)\n"),
            PLAIN,
        ),
    }
}
