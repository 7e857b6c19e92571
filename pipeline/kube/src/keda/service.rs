//! The four calls of KEDA's `ExternalScaler` service over the run's state. Each call reads
//! its trigger's metadata afresh (KEDA sends it every time), so a changed ScaledObject takes
//! effect at its next poll; nothing is kept per trigger but the open IsActive streams.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use wfe_http::ApiState;

use crate::error::ScalerError;
use crate::keda::metric::{self, Reading};
use crate::keda::query::{Defaults, Query};
use crate::proto::external_scaler_server::ExternalScaler;
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// Settings of the scaler's service.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalerOptions {
    /// What triggers leave out.
    pub defaults: Defaults,
    /// How often an open IsActive stream looks again (KEDA is sent a value only on a change).
    pub poll: Duration,
    /// Most IsActive streams open at once; past it, a new one is refused (retry later).
    pub max_streams: usize,
}

impl Default for ScalerOptions {
    fn default() -> Self {
        Self {
            defaults: Defaults::default(),
            poll: Duration::from_secs(1),
            max_streams: 256,
        }
    }
}

/// KEDA's external scaler over a run's [`ApiState`].
pub struct Scaler {
    state: Arc<ApiState>,
    opts: ScalerOptions,
    streams: Arc<Semaphore>,
}

impl Scaler {
    pub fn new(state: Arc<ApiState>, opts: ScalerOptions) -> Self {
        Self {
            state,
            streams: Arc::new(Semaphore::new(opts.max_streams)),
            opts,
        }
    }

    fn query(&self, r: Option<&ScaledObjectRef>) -> Result<Query, ScalerError> {
        let empty = Default::default();
        let metadata = r.map_or(&empty, |r| &r.scaler_metadata);
        Query::parse(metadata, &self.opts.defaults)
    }

    fn reading(&self, q: &Query) -> Result<Reading, ScalerError> {
        self.state.read(|s| metric::read(s, q))
    }
}

/// One call answered: logged, counted by call and outcome (`wfe_keda_calls_total`), and
/// turned into what tonic sends.
fn answered<T>(call: &'static str, r: Result<T, ScalerError>) -> Result<Response<T>, Status> {
    let outcome = match &r {
        Ok(_) => "ok",
        // Not there yet is routine while a run warms up; a wrong trigger is worth a line.
        Err(e) if e.retry_helps() => {
            tracing::debug!(call, "keda: {e}");
            e.kind()
        }
        Err(e) => {
            tracing::info!(call, "keda: {e}");
            e.kind()
        }
    };
    metrics::counter!("wfe_keda_calls_total", "call" => call, "outcome" => outcome).increment(1);
    r.map(Response::new).map_err(Status::from)
}

type ActiveStream = ReceiverStream<Result<IsActiveResponse, Status>>;

#[tonic::async_trait]
impl ExternalScaler for Scaler {
    async fn is_active(
        &self,
        req: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let r = self.query(Some(req.get_ref())).and_then(|q| {
            let r = self.reading(&q)?;
            Ok(IsActiveResponse {
                result: r.active(&q),
            })
        });
        answered("IsActive", r)
    }

    type StreamIsActiveStream = ActiveStream;

    async fn stream_is_active(
        &self,
        req: Request<ScaledObjectRef>,
    ) -> Result<Response<ActiveStream>, Status> {
        let r = self.query(Some(req.get_ref())).and_then(|q| self.watch(q));
        answered("StreamIsActive", r)
    }

    async fn get_metric_spec(
        &self,
        req: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let r = self
            .query(Some(req.get_ref()))
            .map(|q| GetMetricSpecResponse {
                metric_specs: vec![MetricSpec {
                    metric_name: q.metric_name(),
                    target_size: q.target_per_replica.ceil() as i64,
                    target_size_float: q.target_per_replica,
                }],
            });
        answered("GetMetricSpec", r)
    }

    async fn get_metrics(
        &self,
        req: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let req = req.get_ref();
        let r = self
            .query(req.scaled_object_ref.as_ref())
            .and_then(|q| self.metric_value(&q, &req.metric_name));
        answered("GetMetrics", r)
    }
}

impl Scaler {
    /// GetMetrics' answer for `q`, asked as `asked`.
    fn metric_value(&self, q: &Query, asked: &str) -> Result<GetMetricsResponse, ScalerError> {
        let name = q.metric_name();
        // KEDA asks by the name GetMetricSpec gave, with its `sN-` index before it.
        if !asked.is_empty() && !asked.ends_with(&name) {
            return Err(ScalerError::WrongMetric {
                asked: asked.chars().take(256).collect(),
                expected: name,
            });
        }
        let r = self.reading(q)?;
        tracing::debug!(
            workload = %q.workload,
            resource = %q.resource,
            value = r.value,
            forecast = r.forecast,
            horizon_s = r.horizon_s,
            issued_at = r.issued_at,
            "keda: metric"
        );
        Ok(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: name,
                metric_value: r.value.ceil() as i64,
                metric_value_float: r.value,
            }],
        })
    }

    /// An IsActive stream for `q`: the answer now, then each change, until the client goes.
    fn watch(&self, q: Query) -> Result<ActiveStream, ScalerError> {
        let permit =
            self.streams
                .clone()
                .try_acquire_owned()
                .map_err(|_| ScalerError::TooManyStreams {
                    open: self.opts.max_streams,
                })?;
        let (tx, rx) = mpsc::channel(1);
        let (state, poll) = (self.state.clone(), self.opts.poll);
        tokio::spawn(async move {
            let _permit = permit;
            let mut sent = None;
            loop {
                match state.read(|s| metric::read(s, &q)).map(|r| r.active(&q)) {
                    Ok(active) if sent != Some(active) => {
                        if tx
                            .send(Ok(IsActiveResponse { result: active }))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        sent = Some(active);
                    }
                    Ok(_) => {}
                    // Not known yet: say nothing (a `false` would scale the workload to zero).
                    Err(e) if e.retry_helps() => {}
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        });
        Ok(ReceiverStream::new(rx))
    }
}

#[cfg(test)]
mod tests;
