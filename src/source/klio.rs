//! Klio's protobuf envelope (Spotify Klio's `KlioMessage`, field numbers in the derives below),
//! byte-compatible with Klio jobs, and the rules a Klio job follows on intake and output: recipients, audit log,
//! ping, force, `trigger_children_of`, V1 messages.

use prost::Message as _;
use serde::{Deserialize, Serialize};

/// `KlioMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KlioMessage {
    /// Routing and mode flags.
    #[prost(message, optional, tag = "1")]
    pub metadata: Option<Metadata>,
    /// The unit of work.
    #[prost(message, optional, tag = "2")]
    pub data: Option<Data>,
    /// `Version` (0 unknown, 1 V1, 2 V2).
    #[prost(int32, tag = "3")]
    pub version: i32,
}

/// `KlioMessage.Data`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Data {
    /// V1 name of the element (read, never written).
    #[prost(string, tag = "1")]
    pub entity_id: String,
    /// State passed between steps of one job.
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
    /// The element id.
    #[prost(bytes = "vec", tag = "3")]
    pub element: Vec<u8>,
}

/// `KlioMessage.Metadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metadata {
    /// V1 recipient list (empty = everyone).
    #[prost(message, repeated, tag = "1")]
    pub downstream: Vec<KlioJob>,
    /// Declared, unused.
    #[prost(message, repeated, tag = "2")]
    pub visited: Vec<KlioJob>,
    /// Every job appends itself on intake.
    #[prost(message, repeated, tag = "3")]
    pub job_audit_log: Vec<AuditLogItem>,
    /// Recompute even if the output exists.
    #[prost(bool, tag = "4")]
    pub force: bool,
    /// Do no work; pass the message on.
    #[prost(bool, tag = "5")]
    pub ping: bool,
    /// Who should process it (V2).
    #[prost(message, optional, tag = "6")]
    pub intended_recipients: Option<Recipients>,
}

/// `Metadata.Recipients`: a oneof of `anyone` (1) and `limited` (2).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Recipients {
    /// Which one.
    #[prost(oneof = "Recipient", tags = "1, 2")]
    pub recipients: Option<Recipient>,
}

/// The oneof of [`Recipients`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Recipient {
    /// Everyone (top-down).
    #[prost(message, tag = "1")]
    Anyone(Anyone),
    /// Only the listed jobs.
    #[prost(message, tag = "2")]
    Limited(Limited),
}

/// `Recipients.Anyone` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Anyone {}

/// `Recipients.Limited`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Limited {
    /// The jobs that should process it.
    #[prost(message, repeated, tag = "1")]
    pub recipients: Vec<KlioJob>,
    /// When this job processes it, switch to `anyone` before publishing.
    #[prost(message, optional, tag = "2")]
    pub trigger_children_of: Option<KlioJob>,
}

/// `KlioJob`: identity is (gcp_project, job_name).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct KlioJob {
    /// Job name.
    #[prost(string, tag = "1")]
    pub job_name: String,
    /// GCP project.
    #[prost(string, tag = "2")]
    pub gcp_project: String,
    /// Deprecated inputs (kept as read).
    #[prost(message, repeated, tag = "3")]
    pub inputs: Vec<JobInput>,
}

/// `KlioJob.JobInput` (deprecated).
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct JobInput {
    /// Topic.
    #[prost(string, tag = "1")]
    pub topic: String,
    /// Subscription.
    #[prost(string, tag = "2")]
    pub subscription: String,
    /// Data location.
    #[prost(string, tag = "3")]
    pub data_location: String,
}

/// `KlioJobAuditLogItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AuditLogItem {
    /// When the job took the message in.
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<prost_types::Timestamp>,
    /// The job.
    #[prost(message, optional, tag = "2")]
    pub klio_job: Option<KlioJob>,
}

/// Version 1 (entity_id era).
pub const V1: i32 = 1;
/// Version 2 (element era).
pub const V2: i32 = 2;

/// `[serve.klio]`: this job's identity in a Klio graph and its intake rules.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KlioConfig {
    /// Job name. Default `klio-edge`.
    pub job_name: String,
    /// GCP project of the job. Empty: `$PUBSUB_PROJECT_ID`, else `local-project`. Default "".
    pub project: String,
    /// Job-wide force: the default when a message does not ask for it (a message with
    /// `force = true` always wins). Default false.
    pub force: bool,
    /// Accept bytes that are not a Klio message: they become the element of a fresh V2
    /// message for anyone. Default false (they are dead-lettered).
    pub allow_non_klio: bool,
    /// Where elements that are bare ids (not paths or URLs) are found: this + id +
    /// `input_suffix` (e.g. `gs://bucket/audio/` and `.wav`). Default "" (ids refused).
    pub input_location: String,
    /// See `input_location`. Default "".
    pub input_suffix: String,
}

impl Default for KlioConfig {
    fn default() -> Self {
        KlioConfig {
            job_name: "klio-edge".into(),
            project: String::new(),
            force: false,
            allow_non_klio: false,
            input_location: String::new(),
            input_suffix: String::new(),
        }
    }
}

/// `$PUBSUB_PROJECT_ID`, else `local-project`.
pub fn default_project() -> String {
    std::env::var("PUBSUB_PROJECT_ID")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "local-project".into())
}

impl KlioConfig {
    /// This job as a `KlioJob`.
    pub fn job(&self) -> KlioJob {
        KlioJob {
            job_name: self.job_name.clone(),
            gcp_project: if self.project.is_empty() {
                default_project()
            } else {
                self.project.clone()
            },
            inputs: Vec::new(),
        }
    }
}

fn same_job(a: &KlioJob, b: &KlioJob) -> bool {
    a.job_name == b.job_name && a.gcp_project == b.gcp_project
}

/// A message taken in by this job.
#[derive(Debug, Clone, PartialEq)]
pub struct Intake {
    /// The message with this job appended to its audit log (V1 messages upgraded to V2).
    pub message: KlioMessage,
    /// The element, as UTF-8 text.
    pub element: String,
    /// `None`: process it; `Some(why)`: not for this job (ack and drop).
    pub not_for_us: Option<String>,
    /// Pass it on without work.
    pub ping: bool,
    /// Recompute even if done (the message's flag, else the job's).
    pub force: bool,
}

/// Decodes a message body and applies the intake rules (1 to 3 of the spec).
///
/// # Errors
/// Bytes that are not a Klio message (unless `allow_non_klio`), or one without an element.
pub fn intake(body: &[u8], cfg: &KlioConfig) -> Result<Intake, String> {
    let me = cfg.job();
    let mut msg = match KlioMessage::decode(body) {
        Ok(m) if m.data.is_some() || m.metadata.is_some() => m,
        Ok(_) | Err(_) if cfg.allow_non_klio => fresh(body.to_vec(), false, false, None),
        Ok(_) => return Err("not a Klio message (no data and no metadata)".into()),
        Err(e) => return Err(format!("not a Klio message: {e}")),
    };
    let data = msg.data.get_or_insert_with(Default::default);
    if data.element.is_empty() && !data.entity_id.is_empty() {
        // V1: the element is the entity id.
        data.element = data.entity_id.clone().into_bytes();
        if msg.version == 0 {
            msg.version = V1;
        }
    } else if msg.version == 0 && !data.element.is_empty() {
        msg.version = V2;
    }
    let element = String::from_utf8(data.element.clone())
        .map_err(|_| "the element is not UTF-8 text".to_string())?;
    if element.is_empty() {
        return Err("the message names no element".into());
    }
    let meta = msg.metadata.get_or_insert_with(Default::default);
    let not_for_us = if msg.version == V1 {
        (!meta.downstream.is_empty() && !meta.downstream.iter().any(|j| same_job(j, &me)))
            .then(|| "V1 message whose downstream list does not name this job".to_string())
    } else {
        match meta
            .intended_recipients
            .as_ref()
            .and_then(|r| r.recipients.as_ref())
        {
            None | Some(Recipient::Anyone(_)) => None,
            Some(Recipient::Limited(l)) => (!l.recipients.iter().any(|j| same_job(j, &me)))
                .then(|| "limited to other jobs".to_string()),
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    meta.job_audit_log.push(AuditLogItem {
        timestamp: Some(prost_types::Timestamp {
            seconds: now.as_secs() as i64,
            nanos: now.subsec_nanos() as i32,
        }),
        klio_job: Some(me),
    });
    let (ping, force) = (meta.ping, meta.force || cfg.force);
    Ok(Intake {
        message: msg,
        element,
        not_for_us,
        ping,
        force,
    })
}

/// The message to publish downstream after this job's work (rule 7 and 8): the intake's
/// message, switched to `anyone` when it asked to trigger the children of this job; V1
/// messages go out as V2.
pub fn output(intake: &Intake, cfg: &KlioConfig) -> Vec<u8> {
    let me = cfg.job();
    let mut msg = intake.message.clone();
    msg.version = V2;
    let meta = msg.metadata.get_or_insert_with(Default::default);
    let trigger = matches!(
        meta.intended_recipients.as_ref().and_then(|r| r.recipients.as_ref()),
        Some(Recipient::Limited(Limited { trigger_children_of: Some(j), .. })) if same_job(j, &me)
    );
    if trigger || meta.intended_recipients.is_none() {
        meta.intended_recipients = Some(Recipients {
            recipients: Some(Recipient::Anyone(Anyone {})),
        });
    }
    msg.encode_to_vec()
}

/// How `publish` addresses a new message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Anyone may process it (every job reading the topic, and on down the graph).
    Anyone,
    /// Only this job, and nothing below it (Klio's default, `--bottom-up`).
    BottomUp,
    /// This job, then everything below it (`--top-down`).
    TopDown,
}

/// A new V2 message for `element` (what `klio-edge publish` sends).
pub fn new_message(
    element: &str,
    force: bool,
    ping: bool,
    dir: Direction,
    cfg: &KlioConfig,
) -> Vec<u8> {
    let me = cfg.job();
    let recipients = match dir {
        Direction::Anyone => Recipient::Anyone(Anyone {}),
        Direction::BottomUp => Recipient::Limited(Limited {
            recipients: vec![me],
            trigger_children_of: None,
        }),
        Direction::TopDown => Recipient::Limited(Limited {
            recipients: vec![me.clone()],
            trigger_children_of: Some(me),
        }),
    };
    fresh(element.as_bytes().to_vec(), force, ping, Some(recipients)).encode_to_vec()
}

fn fresh(element: Vec<u8>, force: bool, ping: bool, r: Option<Recipient>) -> KlioMessage {
    KlioMessage {
        metadata: Some(Metadata {
            force,
            ping,
            intended_recipients: Some(Recipients {
                recipients: Some(r.unwrap_or(Recipient::Anyone(Anyone {}))),
            }),
            ..Default::default()
        }),
        data: Some(Data {
            element,
            ..Default::default()
        }),
        version: V2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> KlioConfig {
        KlioConfig {
            job_name: "edge".into(),
            project: "p".into(),
            ..Default::default()
        }
    }

    #[test]
    fn bottom_up_reaches_only_this_job_and_top_down_opens_the_graph() {
        let c = cfg();
        let other = KlioConfig {
            job_name: "other".into(),
            ..cfg()
        };
        let b = new_message("/a.wav", false, false, Direction::BottomUp, &c);
        let i = intake(&b, &c).unwrap();
        assert_eq!(
            (i.element.as_str(), i.not_for_us.is_none()),
            ("/a.wav", true)
        );
        assert!(intake(&b, &other).unwrap().not_for_us.is_some());
        // Bottom-up output stays limited to this job: the children drop it.
        let out = output(&i, &c);
        assert!(intake(&out, &other).unwrap().not_for_us.is_some());
        // Top-down output goes to anyone, with both jobs in the audit log.
        let t = new_message("/a.wav", true, false, Direction::TopDown, &c);
        let i = intake(&t, &c).unwrap();
        assert!(i.force);
        let child = intake(&output(&i, &c), &other).unwrap();
        assert!(child.not_for_us.is_none());
        let log: Vec<String> = child
            .message
            .metadata
            .unwrap()
            .job_audit_log
            .iter()
            .map(|a| a.klio_job.as_ref().unwrap().job_name.clone())
            .collect();
        assert_eq!(log, ["edge", "other"]);
    }

    #[test]
    fn v1_garbage_and_non_klio_bytes() {
        let c = cfg();
        let v1 = KlioMessage {
            data: Some(Data {
                entity_id: "track-1".into(),
                ..Default::default()
            }),
            metadata: Some(Metadata::default()),
            version: 0,
        }
        .encode_to_vec();
        let i = intake(&v1, &c).unwrap();
        assert_eq!((i.element.as_str(), i.message.version), ("track-1", V1));
        assert!(intake(b"\xff\xff\xff garbage", &c).is_err());
        let lax = KlioConfig {
            allow_non_klio: true,
            ..cfg()
        };
        assert_eq!(intake(b"/x/y.wav", &lax).unwrap().element, "/x/y.wav");
        assert!(intake(b"", &c).is_err());
    }
}
