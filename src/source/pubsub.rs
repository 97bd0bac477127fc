//! The Google Pub/Sub source: one subscription shared by every serve process of a fleet (the
//! service hands each message to one of them), over gRPC with `gcloud-pubsub`.
//!
//! - Pulls only while there is room: at most `max_in_flight` messages and
//!   `max_outstanding_bytes` bytes held unacknowledged (flow control).
//! - While an item runs, its ack deadline is extended every half deadline.
//! - Acked after the ledger commit (and after the output event is published); a retryable
//!   failure is nacked by setting the message's ack deadline to the backoff delay; poison
//!   messages and failures out of deliveries are published to the dead-letter topic with the
//!   reason as attributes, then acked.
//! - `PUBSUB_EMULATOR_HOST` selects an emulator (no credentials); otherwise Application
//!   Default Credentials are used.

use crate::pipeline::ErrorKind;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{Context, Result};
use gcloud_googleapis::pubsub::v1::{PubsubMessage, PullRequest};
use gcloud_pubsub::client::{Client, ClientConfig};
use gcloud_pubsub::publisher::Publisher;
use gcloud_pubsub::subscriber::ReceivedMessage;
use gcloud_pubsub::subscription::{Subscription, SubscriptionConfig};
use tokio::sync::oneshot;

use super::settings::{CreateMode, PubsubConfig};
use super::{BadMessage, Delivery, Event, EventSource, Parser};

/// A connected client.
pub struct PubsubClient {
    client: Client,
    cfg: PubsubConfig,
}

/// Connects (emulator or ADC) and, where configured, creates the topics and the
/// subscription.
///
/// # Errors
/// No credentials, or the service refused.
pub async fn connect(cfg: &PubsubConfig, subscribe: bool) -> Result<PubsubClient> {
    let emulator = std::env::var("PUBSUB_EMULATOR_HOST")
        .ok()
        .filter(|h| !h.is_empty());
    let mut config = ClientConfig {
        project_id: Some(cfg.project()),
        ..ClientConfig::default()
    };
    if emulator.is_none() {
        config = config
            .with_auth()
            .await
            .context("no Google credentials (Application Default Credentials)")?;
    }
    let client = Client::new(config).await.context("cannot reach Pub/Sub")?;
    let create = match cfg.create {
        CreateMode::Always => true,
        CreateMode::Never => false,
        CreateMode::Emulator => emulator.is_some(),
    };
    let c = PubsubClient {
        client,
        cfg: cfg.clone(),
    };
    if create {
        for t in [&cfg.topic, &cfg.output_topic, &cfg.dead_letter_topic] {
            if !t.is_empty() {
                c.ensure_topic(t).await?;
            }
        }
        if subscribe {
            let sub = c.client.subscription(&cfg.subscription);
            if !sub
                .exists(None)
                .await
                .context("cannot look up the subscription")?
            {
                let topic = c.client.topic(&cfg.topic);
                let sc = SubscriptionConfig {
                    ack_deadline_seconds: cfg.ack_deadline_s as i32,
                    ..Default::default()
                };
                if let Err(e) = sub.create(topic.fully_qualified_name(), sc, None).await {
                    // Another process of the fleet may have created it first.
                    if !sub.exists(None).await.unwrap_or(false) {
                        return Err(e)
                            .context(format!("cannot create subscription {}", cfg.subscription));
                    }
                }
            }
        }
    }
    Ok(c)
}

impl PubsubClient {
    async fn ensure_topic(&self, id: &str) -> Result<()> {
        let topic = self.client.topic(id);
        if !topic
            .exists(None)
            .await
            .with_context(|| format!("cannot look up topic {id}"))?
            && topic.create(None, None).await.is_err()
            && !topic.exists(None).await.unwrap_or(false)
        {
            anyhow::bail!("cannot create topic {id}");
        }
        Ok(())
    }

    /// A publisher for a topic.
    pub fn publisher(&self, topic: &str) -> Publisher {
        self.client.topic(topic).new_publisher(None)
    }

    /// The source reading the subscription.
    pub fn source(&self, parser: Parser, max_in_flight: usize) -> PubsubSource {
        let dead = (!self.cfg.dead_letter_topic.is_empty())
            .then(|| Rc::new(self.publisher(&self.cfg.dead_letter_topic)));
        PubsubSource {
            sub: self.client.subscription(&self.cfg.subscription),
            parser,
            dead,
            max_messages: match self.cfg.max_outstanding_messages {
                0 => max_in_flight,
                n => n,
            },
            max_bytes: self.cfg.max_outstanding_bytes,
            held: Rc::new(Held::default()),
            seen: Rc::new(RefCell::new(HashMap::new())),
            buffered: Vec::new(),
            last_message: tokio::time::Instant::now(),
            ack_deadline: Duration::from_secs(u64::from(self.cfg.ack_deadline_s)),
        }
    }
}

/// Publishes messages and waits until the service has stored each.
///
/// # Errors
/// The service refused a message.
pub async fn publish_all(
    publisher: &Publisher,
    bodies: Vec<(Vec<u8>, HashMap<String, String>)>,
) -> Result<()> {
    let mut waiting = Vec::new();
    for (data, attributes) in bodies {
        let msg = PubsubMessage {
            data,
            attributes,
            ..Default::default()
        };
        waiting.push(publisher.publish(msg).await);
        if waiting.len() >= 256 {
            for w in waiting.drain(..) {
                w.get().await.context("Pub/Sub did not store a message")?;
            }
        }
    }
    for w in waiting {
        w.get().await.context("Pub/Sub did not store a message")?;
    }
    Ok(())
}

/// Messages and bytes held unacknowledged by this process.
#[derive(Default)]
struct Held {
    messages: Cell<usize>,
    bytes: Cell<u64>,
}

/// The shared subscription.
pub struct PubsubSource {
    sub: Subscription,
    parser: Parser,
    dead: Option<Rc<Publisher>>,
    max_messages: usize,
    max_bytes: u64,
    held: Rc<Held>,
    /// Deliveries seen by this process per message id (when the subscription has no
    /// dead-letter policy, Pub/Sub does not count them).
    seen: Rc<RefCell<HashMap<String, u32>>>,
    buffered: Vec<ReceivedMessage>,
    last_message: tokio::time::Instant,
    ack_deadline: Duration,
}

/// One delivered message; its ack deadline is extended until it is settled.
pub struct PubsubDelivery {
    msg: ReceivedMessage,
    attempt: u32,
    size: u64,
    held: Rc<Held>,
    dead: Option<Rc<Publisher>>,
    _extend: oneshot::Sender<()>,
}

impl PubsubDelivery {
    fn release(&self) {
        self.held
            .messages
            .set(self.held.messages.get().saturating_sub(1));
        self.held
            .bytes
            .set(self.held.bytes.get().saturating_sub(self.size));
    }
}

fn status(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

impl Delivery for PubsubDelivery {
    fn attempt(&self) -> u32 {
        self.attempt
    }

    fn describe(&self) -> String {
        format!(
            "message {} on {}",
            self.msg.message.message_id, self.msg.subscription
        )
    }

    async fn ack(self) -> Result<()> {
        self.release();
        self.msg.ack().await.map_err(status).context("ack failed")
    }

    async fn retry(self, delay: Duration) -> Result<()> {
        self.release();
        // The message comes back once this deadline passes (0 = at once).
        let s = delay.as_secs().min(600) as i32;
        self.msg
            .modify_ack_deadline(s)
            .await
            .map_err(status)
            .context("nack failed")
    }

    async fn dead_letter(self, kind: ErrorKind, reason: &str) -> Result<()> {
        self.release();
        let Some(dead) = &self.dead else {
            // No topic of our own: nack and let the subscription's dead-letter policy act.
            return self.msg.nack().await.map_err(status).context("nack failed");
        };
        let mut attributes = self.msg.message.attributes.clone();
        attributes.insert("klio-error-kind".into(), kind.as_str().into());
        // Pub/Sub allows 1024 bytes per attribute value: cut on a character boundary.
        let mut cut = reason.len().min(1024);
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        attributes.insert("klio-reason".into(), reason[..cut].to_string());
        attributes.insert("klio-deliveries".into(), self.attempt.to_string());
        attributes.insert("klio-subscription".into(), self.msg.subscription.clone());
        attributes.insert(
            "klio-message-id".into(),
            self.msg.message.message_id.clone(),
        );
        publish_all(dead, vec![(self.msg.message.data.clone(), attributes)])
            .await
            .context("cannot publish the dead letter")?;
        self.msg.ack().await.map_err(status).context("ack failed")
    }
}

impl EventSource for PubsubSource {
    type Delivery = PubsubDelivery;

    async fn next(
        &mut self,
        room: usize,
        wait: Duration,
    ) -> Result<Option<(Result<Event, BadMessage>, PubsubDelivery)>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(m) = self.buffered.pop() {
                return Ok(Some(self.deliver(m)));
            }
            let full = self.held.messages.get() >= self.max_messages
                || self.held.bytes.get() >= self.max_bytes;
            if !full {
                let n = room
                    .min(self.max_messages - self.held.messages.get())
                    .max(1);
                #[allow(deprecated)]
                let req = PullRequest {
                    subscription: self.sub.fully_qualified_name().to_string(),
                    return_immediately: true,
                    max_messages: n as i32,
                };
                let client = self.sub.get_client();
                let got = client
                    .pull(req, None)
                    .await
                    .map_err(status)
                    .context("cannot pull from Pub/Sub")?
                    .into_inner()
                    .received_messages;
                for m in got.into_iter().rev() {
                    if let Some(message) = m.message {
                        self.buffered.push(ReceivedMessage {
                            message,
                            ack_id: m.ack_id,
                            subscription: self.sub.fully_qualified_name().to_string(),
                            subscriber_client: client.clone(),
                            delivery_attempt: (m.delivery_attempt > 0)
                                .then_some(m.delivery_attempt as usize),
                        });
                    }
                }
                if !self.buffered.is_empty() {
                    continue;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    async fn drained(&mut self) -> Result<bool> {
        // Pub/Sub reports no backlog to subscribers. Nothing pulled for longer than the ack
        // deadline means nothing is queued and nothing held by a dead worker is due back.
        Ok(self.buffered.is_empty()
            && self.held.messages.get() == 0
            && self.last_message.elapsed() > self.ack_deadline + Duration::from_secs(2))
    }
}

impl PubsubSource {
    fn deliver(&mut self, m: ReceivedMessage) -> (Result<Event, BadMessage>, PubsubDelivery) {
        self.last_message = tokio::time::Instant::now();
        let size = m.message.data.len() as u64;
        self.held.messages.set(self.held.messages.get() + 1);
        self.held.bytes.set(self.held.bytes.get() + size);
        let attempt = match m.delivery_attempt {
            Some(n) => n as u32,
            None => {
                let mut seen = self.seen.borrow_mut();
                if seen.len() > 100_000 {
                    seen.clear();
                }
                let n = seen.entry(m.message.message_id.clone()).or_insert(0);
                *n += 1;
                *n
            }
        };
        let parsed = self.parser.parse(&m.message.data);
        let (tx, mut rx) = oneshot::channel::<()>();
        // Extends the ack deadline every half deadline until the delivery is settled (its
        // sender dropped).
        let (ext, every) = (m.clone(), self.ack_deadline);
        tokio::task::spawn_local(async move {
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(every / 2) => {
                        if let Err(e) = ext.modify_ack_deadline(every.as_secs() as i32).await {
                            tracing::warn!("cannot extend the ack deadline: {}", e.message());
                        }
                    }
                }
            }
        });
        let d = PubsubDelivery {
            msg: m,
            attempt,
            size,
            held: self.held.clone(),
            dead: self.dead.clone(),
            _extend: tx,
        };
        (parsed, d)
    }
}
