//! Event sources for `serve`: what arrives from a queue (the event: which item, forced or
//! not), how it is parsed, the two traits every source implements, and the sources
//! themselves (an inbox folder, NATS JetStream, Google Pub/Sub) with Klio's envelope.

pub mod allow;
pub mod inbox;
pub mod klio;
pub mod nats;
pub mod pubsub;
pub mod settings;

use std::time::Duration;

use anyhow::Result;

use crate::item::{ItemRef, Source};
use crate::pipeline::ErrorKind;
use klio::{Intake, KlioConfig};
use settings::{MessageFormat, ServeConfig};

/// Longest message accepted, in bytes (a path or a small JSON object).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Longest element id a message may name.
pub const MAX_ELEMENT_LEN: usize = 200;

/// One request to process an item.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The element id named by the message, or `None` to derive it from the path as `process`
    /// does.
    pub element: Option<String>,
    /// The input: a local path (or `file://` URI) or an object-store URL.
    pub source: Source,
    /// Recompute even if done.
    pub force: bool,
    /// The Klio envelope it came in (with this job in its audit log), when the source speaks
    /// Klio.
    pub klio: Option<Box<Intake>>,
}

impl Event {
    /// The item this event names.
    pub fn item(&self) -> ItemRef {
        match &self.element {
            Some(e) => ItemRef {
                element: e.clone(),
                source: self.source.clone(),
            },
            None => ItemRef::for_source(self.source.clone()),
        }
    }
}

/// Why a message cannot become an event (it is dead-lettered with this reason).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub String);

fn bad<T>(s: impl Into<String>) -> Result<T, BadMessage> {
    Err(BadMessage(s.into()))
}

/// Checks an element id named by a message: 1 to 200 of `[A-Za-z0-9._-]`, not starting with
/// `.` or `-`, so it can never name a path outside the output folder nor pass for an option
/// on an `[[exec]]` program's command line.
///
/// # Errors
/// The reason it is refused.
pub fn check_element(e: &str) -> Result<(), BadMessage> {
    if e.is_empty() || e.len() > MAX_ELEMENT_LEN {
        return bad(format!(
            "element must be 1 to {MAX_ELEMENT_LEN} characters long"
        ));
    }
    if e.starts_with('.') || e.starts_with('-') {
        // '.': no hidden or relative names; '-': never an option to an [[exec]] program.
        return bad(format!("element {e:?} must not start with '.' or '-'"));
    }
    if let Some(c) = e
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return bad(format!(
            "element {:?} holds {c:?}; only letters, digits, '.', '_' and '-' are allowed",
            e.escape_debug().to_string()
        ));
    }
    Ok(())
}

fn source_of(uri: &str) -> Result<Source, BadMessage> {
    if uri.is_empty() {
        return bad("empty path");
    }
    if uri.contains('\0') {
        return bad("path holds a NUL byte");
    }
    let source = Source::parse(uri).map_err(BadMessage)?;
    if let (Source::Path(_), Some((scheme, _))) = (&source, uri.split_once("://")) {
        if scheme != "file"
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
        {
            return bad(format!(
                "{scheme}:// inputs are not supported; give a local path, a file:// URI, or an s3://, gs:// or https:// URL"
            ));
        }
    }
    Ok(source)
}

/// Parses a message body: a JSON object `{"element": ..., "uri": ..., "force": ...}` (only
/// `uri` required; `path` is accepted for `uri`) or a bare path / `file://` URI on one line.
///
/// # Errors
/// Anything else, with the reason.
pub fn parse(body: &[u8]) -> Result<Event, BadMessage> {
    if body.len() > MAX_MESSAGE_BYTES {
        return bad(format!(
            "message is {} bytes; at most {MAX_MESSAGE_BYTES} are accepted",
            body.len()
        ));
    }
    let Ok(text) = std::str::from_utf8(body) else {
        return bad("message is not UTF-8 text");
    };
    let text = text.trim();
    if text.starts_with('{') {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Json {
            element: Option<String>,
            #[serde(alias = "path")]
            uri: String,
            #[serde(default)]
            force: bool,
        }
        let j: Json =
            serde_json::from_str(text).map_err(|e| BadMessage(format!("bad JSON message: {e}")))?;
        if let Some(e) = &j.element {
            check_element(e)?;
        }
        return Ok(Event {
            element: j.element,
            source: source_of(&j.uri)?,
            force: j.force,
            klio: None,
        });
    }
    if text.contains('\n') {
        return bad("a bare message must be one path on one line");
    }
    Ok(Event {
        element: None,
        source: source_of(text)?,
        force: false,
        klio: None,
    })
}

/// Parses message bodies in the configured format.
#[derive(Debug, Clone)]
pub struct Parser {
    /// JSON (or bare paths), or Klio's envelope.
    pub format: MessageFormat,
    /// This job in a Klio graph.
    pub klio: KlioConfig,
}

impl Parser {
    /// The parser `[serve]` configures (`message_format`, `[serve.klio]`).
    pub fn new(cfg: &ServeConfig) -> Self {
        Parser {
            format: cfg.message_format,
            klio: cfg.klio.clone(),
        }
    }

    /// A body as an event, or the reason it is refused.
    ///
    /// # Errors
    /// A malformed message.
    pub fn parse(&self, body: &[u8]) -> Result<Event, BadMessage> {
        match self.format {
            MessageFormat::Json => parse(body),
            MessageFormat::Klio => parse_klio(body, &self.klio),
        }
    }
}

/// A Klio envelope: its element is a path or URL of the input (element id derived as for
/// `process`), or a bare id found at `serve.klio.input_location` + id + `input_suffix` (the
/// id is then the element id, as in Klio).
///
/// # Errors
/// Not a Klio message, or an element that names no input.
pub fn parse_klio(body: &[u8], cfg: &KlioConfig) -> Result<Event, BadMessage> {
    if body.len() > MAX_MESSAGE_BYTES {
        return bad(format!(
            "message is {} bytes; at most {MAX_MESSAGE_BYTES} are accepted",
            body.len()
        ));
    }
    let intake = klio::intake(body, cfg).map_err(BadMessage)?;
    let el = intake.element.as_str();
    let is_ref = el.contains("://") || el.starts_with('/');
    let (element, source) = if intake.ping || intake.not_for_us.is_some() {
        // Passed on or dropped without looking at the input (the element may be anything).
        (None, Source::Path(el.into()))
    } else if is_ref {
        (None, source_of(el)?)
    } else if !cfg.input_location.is_empty() {
        check_element(el)?;
        let at = format!("{}{el}{}", cfg.input_location, cfg.input_suffix);
        (Some(el.to_string()), source_of(&at)?)
    } else {
        return bad(format!(
            "element {el:?} is not a path or URL, and serve.klio.input_location is not set"
        ));
    };
    Ok(Event {
        element,
        source,
        force: intake.force,
        klio: Some(Box::new(intake)),
    })
}

/// The JSON message `publish` sends for an input.
pub fn message_for(source: &Source, force: bool) -> Vec<u8> {
    let mut m = serde_json::json!({ "uri": source.to_string() });
    if force {
        m["force"] = true.into();
    }
    serde_json::to_vec(&m).expect("message serialises")
}

/// How the driver settles one delivery.
#[allow(async_fn_in_trait)] // used on one thread (a LocalSet), never across threads
pub trait Delivery {
    /// Which delivery of this message this is (1 for the first).
    fn attempt(&self) -> u32;
    /// Where it came from, for logs.
    fn describe(&self) -> String;
    /// The item is finished (done or skipped): remove the message.
    ///
    /// # Errors
    /// The broker or the file system refused.
    async fn ack(self) -> Result<()>;
    /// A retryable failure: deliver again after `delay` (the source may ignore the delay).
    ///
    /// # Errors
    /// As for `ack`.
    async fn retry(self, delay: Duration) -> Result<()>;
    /// A poison message or a failure out of attempts: park it with `reason` and never deliver
    /// it again.
    ///
    /// # Errors
    /// As for `ack`.
    async fn dead_letter(self, kind: ErrorKind, reason: &str) -> Result<()>;
}

/// A queue of events shared by a fleet.
#[allow(async_fn_in_trait)]
pub trait EventSource {
    /// The handle to settle one message.
    type Delivery: Delivery + 'static;
    /// Waits up to `wait` for the next message; `room` is how many more this process can take
    /// now (a hint for how many to pull at once). The body is parsed, or the reason why not.
    ///
    /// # Errors
    /// The connection to the source failed.
    async fn next(
        &mut self,
        room: usize,
        wait: Duration,
    ) -> Result<Option<(Result<Event, BadMessage>, Self::Delivery)>>;
    /// Whether nothing is left for the fleet: nothing queued and nothing delivered but not yet
    /// acknowledged (a dead consumer's messages count until they are redelivered).
    ///
    /// # Errors
    /// The source cannot be asked.
    async fn drained(&mut self) -> Result<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_bare_and_file_uri() {
        let e = parse(br#"{"element": "a-1", "uri": "file:///x/y.wav", "force": true}"#).unwrap();
        assert_eq!(e.element.as_deref(), Some("a-1"));
        assert_eq!(e.source, Source::Path("/x/y.wav".into()));
        assert!(e.force);
        let e = parse(b"  /data/b.flac\n").unwrap();
        assert_eq!(e.source, Source::Path("/data/b.flac".into()));
        assert!(!e.force && e.element.is_none());
        assert_eq!(
            parse(br#"{"path": "c.wav"}"#).unwrap().source,
            Source::Path(crate::item::absolute(std::path::Path::new("c.wav")))
        );
        let e = parse(br#"{"uri": "s3://corpus/a/b.wav"}"#).unwrap();
        assert_eq!(e.source.to_string(), "s3://corpus/a/b.wav");
        assert_eq!(
            e.item().element,
            ItemRef::for_source(e.source.clone()).element
        );
    }

    #[test]
    fn refuses_hostile_and_malformed_messages() {
        for body in [
            &b"{not json"[..],
            br#"{"uri": "a.wav", "extra": 1}"#,
            br#"{"element": "../etc", "uri": "a.wav"}"#,
            br#"{"element": ".hidden", "uri": "a.wav"}"#,
            br#"{"element": "a/b", "uri": "a.wav"}"#,
            b"",
            b"a\nb",
            b"a\0b",
            b"\xff\xfe",
            b"ftp://host/x.wav",
            b"s3:///no-bucket.wav",
        ] {
            assert!(
                parse(body).is_err(),
                "{:?} accepted",
                String::from_utf8_lossy(body)
            );
        }
        assert!(parse(&vec![b'a'; MAX_MESSAGE_BYTES + 1]).is_err());
        assert!(check_element(&"e".repeat(MAX_ELEMENT_LEN + 1)).is_err());
        assert!(check_element("song_01.take-2").is_ok());
    }

    #[test]
    fn publish_message_round_trips() {
        let src = Source::Path("/tmp/x.wav".into());
        let e = parse(&message_for(&src, true)).unwrap();
        assert_eq!(e.source, src);
        let src = Source::parse("gs://b/k e y.wav").unwrap();
        assert_eq!(parse(&message_for(&src, false)).unwrap().source, src);
        assert!(e.force);
    }
}
