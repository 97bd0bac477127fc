//! `[serve]`: the event source, concurrency, the HTTP endpoint and shutdown.

use std::path::PathBuf;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

/// Which event source `serve` and `publish` use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceKind {
    /// A local inbox folder (`[serve.inbox]`).
    Inbox,
    /// A NATS JetStream work queue (`[serve.nats]`).
    Nats,
    /// A Google Pub/Sub subscription (`[serve.pubsub]`).
    Pubsub,
}

/// How message bodies are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageFormat {
    /// `{"uri": ..., "element": ..., "force": ...}` or a bare path.
    Json,
    /// Klio's protobuf envelope (`[serve.klio]`).
    Klio,
}

/// `[serve]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// `inbox` (default), `nats` or `pubsub`.
    pub source: SourceKind,
    /// Message bodies on NATS and Pub/Sub, in and out: `json` (default) or `klio`.
    pub message_format: MessageFormat,
    /// Items processed at once; also the most events held unacknowledged. 0 means `run.jobs`
    /// (itself 0 = one per core). Default 0.
    pub max_in_flight: usize,
    /// Address of the HTTP endpoint (`/healthz`, `/readyz`, `/metrics`); `""` turns it off;
    /// port 0 picks a free port (logged). Default `127.0.0.1:9464`.
    pub http: String,
    /// Seconds in-flight items get to finish after SIGTERM/SIGINT. Default 30.
    pub drain_timeout_s: f64,
    /// How long one wait for events lasts before `--until-idle` checks whether the source is
    /// drained, in seconds. Default 1.
    pub poll_s: f64,
    /// `[serve.inbox]`.
    pub inbox: InboxConfig,
    /// `[serve.nats]`.
    pub nats: NatsConfig,
    /// `[serve.pubsub]`.
    pub pubsub: PubsubConfig,
    /// `[serve.klio]`: this job in a Klio graph.
    pub klio: super::klio::KlioConfig,
    /// Folders whose files events may name (besides the inbox folder and a local
    /// `klio.input_location`); symlinks and `..` cannot lead out of them. Default none.
    pub allow_paths: Vec<PathBuf>,
    /// URL prefixes events may name (`s3://bucket/prefix/`, `gs://bucket/`,
    /// `https://host/path/`), besides a `klio.input_location` URL. Default none.
    pub allow_urls: Vec<String>,
    /// Let `https://` (and `http://`) inputs reach hosts that are, or resolve to, loopback,
    /// private or link-local addresses. Default false.
    pub allow_private_hosts: bool,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            source: SourceKind::Inbox,
            message_format: MessageFormat::Json,
            max_in_flight: 0,
            http: "127.0.0.1:9464".into(),
            drain_timeout_s: 30.0,
            poll_s: 1.0,
            inbox: InboxConfig::default(),
            nats: NatsConfig::default(),
            pubsub: PubsubConfig::default(),
            klio: Default::default(),
            allow_paths: Vec::new(),
            allow_urls: Vec::new(),
            allow_private_hosts: false,
        }
    }
}

/// What happens to an inbox file once its item is finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AfterDone {
    /// Move it to `done_dir` (or `failed_dir`).
    Move,
    /// Delete it (failed files still go to `failed_dir`).
    Delete,
}

/// `[serve.inbox]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct InboxConfig {
    /// The folder watched for new files (top level only). Default `inbox`.
    pub dir: PathBuf,
    /// Where finished files go. Default `<dir>/done`.
    pub done_dir: Option<PathBuf>,
    /// Where files whose item failed for good go, with a `<name>.error.json` beside them.
    /// Default `<dir>/failed`.
    pub failed_dir: Option<PathBuf>,
    /// `move` (default) or `delete`.
    pub after: AfterDone,
    /// A file is taken once it has not changed for this many seconds. Default 1.
    pub settle_s: f64,
    /// Full rescan of the folder at least this often, in seconds, beside inotify. Default 5.
    pub rescan_s: f64,
}

impl Default for InboxConfig {
    fn default() -> Self {
        InboxConfig {
            dir: PathBuf::from("inbox"),
            done_dir: None,
            failed_dir: None,
            after: AfterDone::Move,
            settle_s: 1.0,
            rescan_s: 5.0,
        }
    }
}

impl InboxConfig {
    /// `done_dir` resolved.
    pub fn done(&self) -> PathBuf {
        self.done_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("done"))
    }

    /// `failed_dir` resolved.
    pub fn failed(&self) -> PathBuf {
        self.failed_dir
            .clone()
            .unwrap_or_else(|| self.dir.join("failed"))
    }
}

/// `[serve.nats]`: a JetStream work queue shared by a fleet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct NatsConfig {
    /// Server URL. `$NATS_URL` wins when set; default `nats://127.0.0.1:4222`.
    pub url: Option<String>,
    /// Stream (work-queue retention), created if missing. Default `KLIO_ITEMS`.
    pub stream: String,
    /// Subject items are published on. Default `klio.items`.
    pub subject: String,
    /// Durable pull consumer shared by the fleet, created if missing. Default `klio-edge`.
    pub consumer: String,
    /// Subject dead letters go to (kept in stream `<stream>_DEAD`). Default `klio.dead.items`.
    pub dead_letter_subject: String,
    /// Seconds before an unacknowledged delivery is redelivered. Default 30.
    pub ack_wait_s: f64,
    /// Deliveries before a retryable failure is dead-lettered. Default 5.
    pub max_deliver: u32,
    /// Delay before the first retry, in seconds, doubling with each delivery. Default 1.
    pub retry_backoff_s: f64,
    /// Most messages asked for in one pull (small batches spread work over a fleet). Default 1.
    pub fetch_batch: usize,
    /// Subject output events go to after each item is done (or skipped, or pinged); "" =
    /// none. Default "".
    pub output_subject: String,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: None,
            stream: "KLIO_ITEMS".into(),
            subject: "klio.items".into(),
            consumer: "klio-edge".into(),
            dead_letter_subject: "klio.dead.items".into(),
            ack_wait_s: 30.0,
            max_deliver: 5,
            retry_backoff_s: 1.0,
            fetch_batch: 1,
            output_subject: String::new(),
        }
    }
}

impl NatsConfig {
    /// The server to connect to: `$NATS_URL`, else `url`, else `nats://127.0.0.1:4222`.
    pub fn server(&self) -> String {
        std::env::var("NATS_URL")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| self.url.clone())
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into())
    }
}

/// `[serve.pubsub]`: a Google Pub/Sub subscription shared by a fleet.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubConfig {
    /// GCP project. "" = `$PUBSUB_PROJECT_ID`, else `local-project`. Default "".
    pub project: String,
    /// Topic `publish` sends to (and the subscription reads). Default `klio-in`.
    pub topic: String,
    /// Subscription shared by the fleet. Default `klio-in-sub`.
    pub subscription: String,
    /// Topic output events go to; "" = none. Default "".
    pub output_topic: String,
    /// Topic dead letters go to (attributes `klio-error-kind`, `klio-reason`,
    /// `klio-deliveries`). "" = none: rely on the subscription's own dead-letter policy (the
    /// message is nacked until Pub/Sub moves it). Default `klio-dead`.
    pub dead_letter_topic: String,
    /// Create missing topics and the subscription: `emulator` (default: only when
    /// `PUBSUB_EMULATOR_HOST` is set), `always`, `never`.
    pub create: CreateMode,
    /// Ack deadline of the subscription, and the extension granted while an item is in
    /// flight (renewed every half of it). Default 10.
    pub ack_deadline_s: u32,
    /// Most messages held unacknowledged by this process. 0 = `max_in_flight`. Default 0.
    pub max_outstanding_messages: usize,
    /// Most message bytes held unacknowledged by this process. Default 67108864 (64 MiB).
    pub max_outstanding_bytes: u64,
    /// Deliveries before a retryable failure is dead-lettered. Default 5.
    pub max_deliver: u32,
    /// Delay before the first retry, doubling with each delivery (set as the ack deadline of
    /// the nacked message, at most 600 s). Default 1.
    pub retry_backoff_s: f64,
}

/// `serve.pubsub.create`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreateMode {
    /// When `PUBSUB_EMULATOR_HOST` is set.
    Emulator,
    /// Always.
    Always,
    /// Never.
    Never,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            project: String::new(),
            topic: "klio-in".into(),
            subscription: "klio-in-sub".into(),
            output_topic: String::new(),
            dead_letter_topic: "klio-dead".into(),
            create: CreateMode::Emulator,
            ack_deadline_s: 10,
            max_outstanding_messages: 0,
            max_outstanding_bytes: 64 << 20,
            max_deliver: 5,
            retry_backoff_s: 1.0,
        }
    }
}

impl PubsubConfig {
    /// The project: `project`, else `$PUBSUB_PROJECT_ID`, else `local-project`.
    pub fn project(&self) -> String {
        if self.project.is_empty() {
            super::klio::default_project()
        } else {
            self.project.clone()
        }
    }
}

fn positive(key: &str, v: f64) -> Result<()> {
    if !(v > 0.0 && v.is_finite()) {
        bail!("{key}: {v} must be a positive number of seconds");
    }
    Ok(())
}

impl ServeConfig {
    /// Checks the values that can be checked without connecting.
    ///
    /// # Errors
    /// The first invalid value, naming its key.
    pub fn validate(&self) -> Result<()> {
        for u in &self.allow_urls {
            match crate::store::Remote::parse(u) {
                Ok(Some(_)) => {}
                Ok(None) => bail!(
                    "serve.allow_urls: {u:?} is not an s3://, gs://, https:// or http:// URL \
                     (local folders go in serve.allow_paths)"
                ),
                Err(e) => bail!("serve.allow_urls: {e}"),
            }
        }
        positive("serve.drain_timeout_s", self.drain_timeout_s)?;
        positive("serve.poll_s", self.poll_s)?;
        positive("serve.inbox.rescan_s", self.inbox.rescan_s)?;
        if !(self.inbox.settle_s >= 0.0 && self.inbox.settle_s.is_finite()) {
            bail!("serve.inbox.settle_s: must be 0 or more seconds");
        }
        let n = &self.nats;
        positive("serve.nats.ack_wait_s", n.ack_wait_s)?;
        positive("serve.nats.retry_backoff_s", n.retry_backoff_s)?;
        if n.max_deliver == 0 {
            bail!("serve.nats.max_deliver: must be at least 1");
        }
        if n.fetch_batch == 0 {
            bail!("serve.nats.fetch_batch: must be at least 1");
        }
        for (key, v) in [
            ("serve.nats.stream", &n.stream),
            ("serve.nats.consumer", &n.consumer),
        ] {
            if v.is_empty()
                || !v
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-".contains(c))
            {
                bail!("{key}: {v:?} must be letters, digits, '_' or '-'");
            }
        }
        for (key, v) in [
            ("serve.nats.subject", &n.subject),
            ("serve.nats.dead_letter_subject", &n.dead_letter_subject),
        ] {
            if v.is_empty() || v.contains(|c: char| c.is_whitespace() || c == '*' || c == '>') {
                bail!("{key}: {v:?} must be a literal subject (no spaces or wildcards)");
            }
        }
        if n.subject == n.dead_letter_subject {
            bail!("serve.nats.dead_letter_subject: must differ from serve.nats.subject");
        }
        let p = &self.pubsub;
        positive("serve.pubsub.retry_backoff_s", p.retry_backoff_s)?;
        if !(10..=600).contains(&p.ack_deadline_s) {
            bail!("serve.pubsub.ack_deadline_s: must be between 10 and 600 (Pub/Sub's limits)");
        }
        if p.max_deliver == 0 {
            bail!("serve.pubsub.max_deliver: must be at least 1");
        }
        for (key, v) in [
            ("serve.pubsub.topic", &p.topic),
            ("serve.pubsub.subscription", &p.subscription),
        ] {
            if v.is_empty() || v.contains(char::is_whitespace) {
                bail!("{key}: {v:?} must be a topic or subscription id");
            }
        }
        for (key, v) in [
            ("serve.pubsub.output_topic", &p.output_topic),
            ("serve.pubsub.dead_letter_topic", &p.dead_letter_topic),
        ] {
            if *v == p.topic {
                bail!("{key}: must differ from serve.pubsub.topic (messages would loop)");
            }
        }
        if !n.output_subject.is_empty()
            && (n.output_subject == n.subject || n.output_subject == n.dead_letter_subject)
        {
            bail!("serve.nats.output_subject: must differ from the input and dead-letter subjects");
        }
        if self.klio.job_name.is_empty() {
            bail!("serve.klio.job_name: must not be empty");
        }
        if !self.http.is_empty() && self.http.parse::<std::net::SocketAddr>().is_err() {
            bail!(
                "serve.http: {:?} is not an address like 127.0.0.1:9464",
                self.http
            );
        }
        Ok(())
    }
}
