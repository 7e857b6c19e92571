//! Talking to the broker outside the data path: creating topics, asking how many partitions
//! a topic has, and reading one partition from an offset to its end (snapshots, recordings).

use std::time::{Duration, Instant};

use backon::{BlockingRetryable, ExponentialBuilder};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use wfe_contract::{Error, Result};

use crate::KafkaConfig;

/// How long a metadata or watermark request may take before it is retried.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A broker error, marked retryable when the broker may simply be away.
pub fn kafka_error(what: impl std::fmt::Display, e: KafkaError) -> Error {
    let retryable = match e.rdkafka_error_code() {
        Some(code) => matches!(
            code,
            RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::NotCoordinator
                | RDKafkaErrorCode::CoordinatorNotAvailable
                | RDKafkaErrorCode::CoordinatorLoadInProgress
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::NetworkException
                | RDKafkaErrorCode::RebalanceInProgress
                | RDKafkaErrorCode::WaitingForCoordinator
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::QueueFull
        ),
        None => true,
    };
    Error::External {
        service: "kafka".into(),
        message: format!("{what}: {e}"),
        retryable,
    }
}

/// Creates the topics that do not exist yet (`compacted` ones with `cleanup.policy=compact`).
/// Topics that exist are left as they are.
pub async fn ensure_topics(cfg: &KafkaConfig, topics: &[(String, bool)]) -> Result<()> {
    if !cfg.create_topics || topics.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = cfg
        .base()
        .create()
        .map_err(|e| kafka_error("admin client", e))?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, compacted)| {
            let t = NewTopic::new(
                name,
                cfg.partitions,
                TopicReplication::Fixed(cfg.replication_factor),
            );
            if *compacted {
                t.set("cleanup.policy", "compact")
            } else {
                t
            }
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
    // A broker that is not up yet is waited for (a fleet often starts before its broker).
    let mut wait = Duration::from_secs(1);
    let results = loop {
        match admin.create_topics(new.iter(), &opts).await {
            Ok(r) => break r,
            Err(e) => {
                let err = kafka_error(format!("create topics at {}", cfg.bootstrap_servers), e);
                if !err.is_retryable() {
                    return Err(err);
                }
                tracing::warn!("{err}; is the broker up? retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    };
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, partitions = cfg.partitions, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(Error::External {
                    service: "kafka".into(),
                    message: format!("create topic `{name}`: {code}"),
                    retryable: false,
                });
            }
        }
    }
    Ok(())
}

/// [`ensure_topics`] from synchronous code (tools and tests); panics on failure.
pub fn ensure_topics_blocking(cfg: &KafkaConfig, topics: &[(String, bool)]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(ensure_topics(cfg, topics))
        .expect("create topics");
}

/// Partitions of `topic`, waiting (with backoff) while the broker is away or the topic is
/// still being created, up to `patience`.
pub fn partition_count<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    client: &C,
    topic: &str,
    patience: Duration,
) -> Result<i32> {
    let partitions = || match client.fetch_metadata(Some(topic), REQUEST_TIMEOUT) {
        Ok(md) => match md.topics().first() {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => {
                Ok(t.partitions().len() as i32)
            }
            Some(t) => Err(format!("topic `{topic}`: {:?}", t.error())),
            None => Err(format!("topic `{topic}` not in metadata")),
        },
        Err(e) => Err(format!("metadata of `{topic}`: {e}")),
    };
    partitions
        .retry(backoff(Duration::from_secs(2), patience))
        .sleep(std::thread::sleep)
        .notify(|err, wait| tracing::debug!("{err}; retrying in {wait:?}"))
        .call()
        .map_err(|message| Error::External {
            service: "kafka".into(),
            message,
            retryable: true,
        })
}

/// Waits from 100 ms, doubling up to `longest`, retrying for about `patience` in all (an
/// attempt may start just before it runs out).
fn backoff(longest: Duration, patience: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(longest)
        .with_total_delay(Some(patience))
        .without_max_times()
}

/// Reads `topic`/`partition` from `from` up to the end it had when the call started.
pub fn read_partition(
    cfg: &KafkaConfig,
    topic: &str,
    partition: i32,
    from: Offset,
) -> Result<Vec<OwnedMessage>> {
    let mut out = Vec::new();
    scan_partition(cfg, topic, partition, from, |m| out.push(m.detach()))?;
    Ok(out)
}

/// Every message of a partition from `from` to its end as of now, handed to `each` one at a
/// time (so a caller that keeps a fold of them holds no more than the fold).
pub fn scan_partition(
    cfg: &KafkaConfig,
    topic: &str,
    partition: i32,
    from: Offset,
    mut each: impl FnMut(&BorrowedMessage<'_>),
) -> Result<()> {
    let reader: BaseConsumer = cfg
        .reader()
        .create()
        .map_err(|e| kafka_error("reader", e))?;
    let (low, high) = retry("watermarks", || {
        reader.fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
    })?;
    let start = match from {
        Offset::Offset(o) => o.max(low),
        _ => low,
    };
    if start >= high {
        return Ok(());
    }
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))
        .map_err(|e| kafka_error("assign", e))?;
    reader.assign(&tpl).map_err(|e| kafka_error("assign", e))?;
    // A broker that goes away mid-read (restarted, a leader moving) is waited out, as
    // librdkafka reconnects by itself; only a read that makes no progress for this long
    // fails (retryable: the caller's caller restarts it).
    let patience = Duration::from_secs(120);
    let mut deadline = Instant::now() + patience;
    let mut warned: Option<Instant> = None;
    let mut next = start;
    while next < high {
        if Instant::now() > deadline {
            return Err(Error::External {
                service: "kafka".into(),
                message: format!("reading {topic}/{partition}: stuck at offset {next} of {high}"),
                retryable: true,
            });
        }
        match reader.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                deadline = Instant::now() + patience;
                each(&m);
            }
            // The end as of now (transaction markers take offsets without being messages).
            Some(Err(KafkaError::PartitionEOF(_))) => break,
            Some(Err(e)) => {
                let err = kafka_error(format!("reading {topic}/{partition}"), e);
                if !err.is_retryable() {
                    return Err(err);
                }
                if warned.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!("{err} (waiting for the broker)");
                    warned = Some(Instant::now());
                }
            }
            None => {}
        }
    }
    Ok(())
}

/// Retries a broker call with backoff while its error is retryable (up to about a minute).
pub fn retry<T>(
    what: &str,
    mut f: impl FnMut() -> std::result::Result<T, KafkaError>,
) -> Result<T> {
    (|| f().map_err(|e| kafka_error(what, e)))
        .retry(backoff(Duration::from_secs(5), Duration::from_secs(60)))
        .sleep(std::thread::sleep)
        .when(Error::is_retryable)
        .notify(|err, wait| tracing::warn!("{err}; retrying in {wait:?}"))
        .call()
}
