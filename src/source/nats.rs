//! The NATS JetStream source: one durable pull consumer on a work-queue stream, shared by every
//! serve process of a fleet (the server hands each message to one of them). A message is acked
//! after the ledger commit, NAKed with a growing delay on a retryable failure, and published to
//! the dead-letter subject (kept in its own stream) and terminated when it is poison or out of
//! deliveries.

use crate::pipeline::ErrorKind;
use std::time::Duration;

use anyhow::{Context, Result};
use async_nats::jetstream::{self, consumer, stream, AckKind};
use futures_util::StreamExt;
use tokio::sync::oneshot;

use super::settings::NatsConfig;
use super::{BadMessage, Delivery, Event, EventSource, Parser};

/// Connects and creates the streams and the consumer if they are missing.
///
/// # Errors
/// No server, or the server refused the stream or consumer settings.
pub async fn connect(cfg: &NatsConfig, parser: Parser) -> Result<(jetstream::Context, NatsSource)> {
    let url = cfg.server();
    let client = async_nats::ConnectOptions::new()
        .name(format!("klio-edge {}", std::process::id()))
        .connection_timeout(Duration::from_secs(5))
        .connect(&url)
        .await
        .with_context(|| format!("cannot connect to NATS at {url}"))?;
    let js = jetstream::new(client);
    let work = js
        .get_or_create_stream(stream::Config {
            name: cfg.stream.clone(),
            subjects: vec![cfg.subject.clone()],
            retention: stream::RetentionPolicy::WorkQueue,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create or open JetStream stream {}", cfg.stream))?;
    let dead_stream = format!("{}_DEAD", cfg.stream);
    js.get_or_create_stream(stream::Config {
        name: dead_stream.clone(),
        subjects: vec![cfg.dead_letter_subject.clone()],
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create or open JetStream stream {dead_stream}"))?;
    // Output events need a stream that stores their subject: a downstream job's work queue
    // (start that job first), else `<stream>_OUT`, created here.
    if !cfg.output_subject.is_empty() && js.stream_by_subject(&cfg.output_subject).await.is_err() {
        let out_stream = format!("{}_OUT", cfg.stream);
        js.get_or_create_stream(stream::Config {
            name: out_stream.clone(),
            subjects: vec![cfg.output_subject.clone()],
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create or open JetStream stream {out_stream}"))?;
    }
    let consumer = work
        .get_or_create_consumer(
            &cfg.consumer,
            consumer::pull::Config {
                durable_name: Some(cfg.consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs_f64(cfg.ack_wait_s),
                // Deliveries are counted here, so a message that keeps killing its worker is
                // still dead-lettered (the server would stop delivering it silently).
                max_deliver: -1,
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("cannot create or open consumer {}", cfg.consumer))?;
    let source = NatsSource {
        js: js.clone(),
        consumer,
        batch: None,
        cfg: cfg.clone(),
        parser,
    };
    Ok((js, source))
}

/// Publishes one message per path and waits for the server to store each.
///
/// # Errors
/// The server did not store a message.
pub async fn publish(js: &jetstream::Context, subject: &str, bodies: Vec<Vec<u8>>) -> Result<()> {
    let mut pending = Vec::new();
    for body in bodies {
        pending.push(
            js.publish(subject.to_string(), body.into())
                .await
                .context("cannot publish")?,
        );
        if pending.len() >= 256 {
            for p in pending.drain(..) {
                p.await.context("the server did not store a message")?;
            }
        }
    }
    for p in pending {
        p.await.context("the server did not store a message")?;
    }
    Ok(())
}

/// The shared consumer.
pub struct NatsSource {
    js: jetstream::Context,
    consumer: consumer::PullConsumer,
    batch: Option<consumer::pull::Batch>,
    cfg: NatsConfig,
    parser: Parser,
}

/// One delivered message.
pub struct NatsDelivery {
    msg: jetstream::Message,
    attempt: u32,
    js: jetstream::Context,
    dead_subject: String,
    /// Dropped when the delivery is settled, which stops the progress heartbeat.
    _heartbeat: oneshot::Sender<()>,
}

impl Delivery for NatsDelivery {
    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn describe(&self) -> String {
        let seq = self.msg.info().map(|i| i.stream_sequence).unwrap_or(0);
        format!("message #{seq} on {}", self.msg.subject)
    }

    async fn ack(self) -> Result<()> {
        self.msg
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("ack failed: {e}"))
    }

    async fn retry(self, delay: Duration) -> Result<()> {
        self.msg
            .ack_with(AckKind::Nak(Some(delay)))
            .await
            .map_err(|e| anyhow::anyhow!("nak failed: {e}"))
    }

    async fn dead_letter(self, kind: ErrorKind, reason: &str) -> Result<()> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Klio-Error-Kind", kind.as_str());
        // Header values are one line.
        headers.insert("Klio-Reason", reason.replace(['\r', '\n'], " ").as_str());
        headers.insert("Klio-Deliveries", self.attempt.to_string().as_str());
        headers.insert("Klio-Subject", self.msg.subject.as_str());
        self.js
            .publish_with_headers(self.dead_subject.clone(), headers, self.msg.payload.clone())
            .await
            .context("cannot publish the dead letter")?
            .await
            .context("the server did not store the dead letter")?;
        self.msg
            .ack_with(AckKind::Term)
            .await
            .map_err(|e| anyhow::anyhow!("term failed: {e}"))
    }
}

/// Tells the server "still working" every half ack wait until the returned sender is
/// dropped, so an item that takes longer than `ack_wait_s` is not handed to a second worker
/// while the first still runs it (a killed worker stops the heartbeat, and its message comes
/// back after one ack wait).
fn heartbeat(msg: &jetstream::Message, ack_wait_s: f64) -> oneshot::Sender<()> {
    let (tx, mut rx) = oneshot::channel::<()>();
    let (msg, every) = (msg.clone(), Duration::from_secs_f64(ack_wait_s / 2.0));
    tokio::task::spawn_local(async move {
        loop {
            tokio::select! {
                _ = &mut rx => break,
                () = tokio::time::sleep(every) => {
                    if let Err(e) = msg.ack_with(AckKind::Progress).await {
                        tracing::warn!("cannot extend the ack wait: {e}");
                    }
                }
            }
        }
    });
    tx
}

impl EventSource for NatsSource {
    type Delivery = NatsDelivery;

    async fn next(
        &mut self,
        room: usize,
        wait: Duration,
    ) -> Result<Option<(Result<Event, BadMessage>, NatsDelivery)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if self.batch.is_none() {
                let n = room.clamp(1, self.cfg.fetch_batch);
                let b = self
                    .consumer
                    .batch()
                    .max_messages(n)
                    .expires(wait.max(Duration::from_millis(100)))
                    .messages()
                    .await
                    .context("cannot pull from NATS")?;
                self.batch = Some(b);
            }
            let b = self.batch.as_mut().expect("set above");
            let got = tokio::time::timeout_at(deadline, b.next()).await;
            match got {
                Err(_) => return Ok(None),
                Ok(None) => {
                    self.batch = None;
                    if tokio::time::Instant::now() >= deadline {
                        return Ok(None);
                    }
                }
                Ok(Some(Err(e))) => {
                    self.batch = None;
                    tracing::warn!("pull from NATS failed: {e}; pulling again");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Ok(Some(Ok(msg))) => {
                    let attempt = msg.info().map(|i| i.delivered.max(1) as u32).unwrap_or(1);
                    let parsed = self.parser.parse(&msg.payload);
                    let d = NatsDelivery {
                        _heartbeat: heartbeat(&msg, self.cfg.ack_wait_s),
                        msg,
                        attempt,
                        js: self.js.clone(),
                        dead_subject: self.cfg.dead_letter_subject.clone(),
                    };
                    return Ok(Some((parsed, d)));
                }
            }
        }
    }

    async fn drained(&mut self) -> Result<bool> {
        let info = self
            .consumer
            .info()
            .await
            .context("cannot read the consumer's state")?;
        Ok(info.num_pending == 0 && info.num_ack_pending == 0)
    }
}
