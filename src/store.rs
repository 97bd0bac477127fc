//! Object stores: `s3://`, `gs://` and `https://` (and `http://` where allowed) through the
//! `object_store` crate, behind a small blocking facade the pipeline's worker threads call.
//!
//! One client per bucket (or host) is built on first use and shared. Credentials come from
//! the standard places: the `AWS_*` variables and the AWS chain for S3 (`AWS_ENDPOINT_URL`,
//! `AWS_ALLOW_HTTP`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION` are enough for
//! an S3-compatible store), `GOOGLE_*` variables and Application Default Credentials for GCS.
//! `[store]` in the config overrides endpoints, timeouts and retries.
//!
//! Requests are retried with exponential backoff on errors that may clear (timeouts, refused
//! connections, 5xx, 429), never on 4xx answers. A download that breaks off mid-body starts
//! again, up to `store.retries` times.

use crate::pipeline::ErrorKind;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, ObjectMeta, ObjectStore, ObjectStoreExt,
    PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};

/// `[store]`: how object stores are reached. Every key has a default; endpoints left empty
/// come from the environment (or the provider's public endpoint).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Allow plain `http://` endpoints (emulators, MinIO on loopback). `AWS_ALLOW_HTTP=true`
    /// also allows it for S3. Default false.
    pub allow_http: bool,
    /// S3 endpoint (MinIO, R2, an emulator). Empty: `AWS_ENDPOINT_URL`, else AWS. Default "".
    pub s3_endpoint: String,
    /// S3 region. Empty: `AWS_REGION` / `AWS_DEFAULT_REGION`, else `us-east-1`. Default "".
    pub s3_region: String,
    /// GCS base URL (for an emulator). Empty: `GOOGLE_BASE_URL`, else Google. Default "".
    pub gcs_base_url: String,
    /// Seconds to establish a connection. Default 5.
    pub connect_timeout_s: f64,
    /// Seconds without a byte before a transfer counts as stalled. Default 30.
    pub read_timeout_s: f64,
    /// Seconds one request may take in all. Default 600.
    pub request_timeout_s: f64,
    /// Retries of a failed request (only errors that may clear). Default 3.
    pub retries: u32,
    /// First retry delay in seconds; doubles per retry, at most 15 s. Default 0.2.
    pub retry_backoff_s: f64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            allow_http: false,
            s3_endpoint: String::new(),
            s3_region: String::new(),
            gcs_base_url: String::new(),
            connect_timeout_s: 5.0,
            read_timeout_s: 30.0,
            request_timeout_s: 600.0,
            retries: 3,
            retry_backoff_s: 0.2,
        }
    }
}

impl StoreConfig {
    /// Checks value ranges.
    ///
    /// # Errors
    /// A value out of range, naming its key.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (key, v) in [
            ("store.connect_timeout_s", self.connect_timeout_s),
            ("store.read_timeout_s", self.read_timeout_s),
            ("store.request_timeout_s", self.request_timeout_s),
        ] {
            if !(v > 0.0 && v <= 86_400.0) {
                anyhow::bail!("{key} must be above 0 and at most 86400 (got {v})");
            }
        }
        if !(0.0..=60.0).contains(&self.retry_backoff_s) {
            anyhow::bail!("store.retry_backoff_s must be between 0 and 60");
        }
        if self.retries > 20 {
            anyhow::bail!("store.retries must be at most 20");
        }
        Ok(())
    }
}

/// The object-store schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// `s3://bucket/key`
    S3,
    /// `gs://bucket/key`
    Gcs,
    /// `https://host/path`
    Https,
    /// `http://host/path` (only with `store.allow_http`)
    Http,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::S3 => "s3",
            Scheme::Gcs => "gs",
            Scheme::Https => "https",
            Scheme::Http => "http",
        }
    }

    /// Buckets can be listed; plain web servers cannot.
    pub fn lists(self) -> bool {
        matches!(self, Scheme::S3 | Scheme::Gcs)
    }
}

/// An object (or a prefix) in a store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Remote {
    scheme: SchemeKey,
    /// Bucket, or `host[:port]`.
    authority: String,
    /// Key (or prefix) inside the bucket, without a leading `/`.
    key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct SchemeKey(u8);

impl SchemeKey {
    fn of(s: Scheme) -> Self {
        SchemeKey(s as u8)
    }
    fn get(self) -> Scheme {
        [Scheme::S3, Scheme::Gcs, Scheme::Https, Scheme::Http][self.0 as usize]
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Escaped so the text parses back to the same key ('%' starts an escape; '?' and '#'
        // would end the path).
        let key = self
            .key
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        write!(f, "{}://{}/{key}", self.scheme().as_str(), self.authority)
    }
}

impl Remote {
    /// Parses `s3://`, `gs://`, `https://` and `http://` URLs; `Ok(None)` for anything else
    /// (a local path). The key is kept as written, percent-escapes decoded.
    ///
    /// # Errors
    /// A URL of one of those schemes that is malformed (no bucket or host, a query string).
    pub fn parse(s: &str) -> Result<Option<Remote>, String> {
        let Some((scheme, _)) = s.split_once("://") else {
            return Ok(None);
        };
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "s3" | "s3a" => Scheme::S3,
            "gs" => Scheme::Gcs,
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            _ => return Ok(None),
        };
        let url = url::Url::parse(s).map_err(|e| format!("{s}: not a valid URL: {e}"))?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "{s}: URLs with a query string or fragment are not supported"
            ));
        }
        let authority = match (scheme, url.host_str()) {
            (_, None) | (_, Some("")) => return Err(format!("{s}: no bucket or host")),
            (Scheme::S3 | Scheme::Gcs, Some(h)) => h.to_string(),
            (_, Some(h)) => match url.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            },
        };
        let key = percent_decode(url.path().trim_start_matches('/'))
            .ok_or_else(|| format!("{s}: the path is not valid UTF-8 once unescaped"))?;
        Ok(Some(Remote {
            scheme: SchemeKey::of(scheme),
            authority,
            key,
        }))
    }

    /// The scheme.
    pub fn scheme(&self) -> Scheme {
        self.scheme.get()
    }

    /// The bucket, or `host[:port]`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The key (or prefix) in the bucket.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The same bucket, another key.
    pub fn with_key(&self, key: &str) -> Remote {
        Remote {
            key: key.trim_start_matches('/').to_string(),
            ..self.clone()
        }
    }

    /// `key/child` (one `/` between them).
    pub fn join(&self, child: &str) -> Remote {
        let base = self.key.trim_end_matches('/');
        let key = if base.is_empty() {
            child.to_string()
        } else {
            format!("{base}/{child}")
        };
        self.with_key(&key)
    }

    /// The last part of the key.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or("")
    }

    fn path(&self) -> ObjPath {
        // Parts as written (no re-escaping): keys listed from the store come back unchanged.
        ObjPath::from_iter(self.key.split('/').filter(|p| !p.is_empty()))
    }

    fn store_id(&self) -> (SchemeKey, String) {
        (self.scheme, self.authority.clone())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
            if let Some(v) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object does not exist.
    #[error("{0} does not exist")]
    NotFound(String),
    /// Credentials missing or refused.
    #[error("{url}: access denied: {message}")]
    Denied {
        /// The object.
        url: String,
        /// The store's answer.
        message: String,
    },
    /// Larger than the configured cap.
    #[error("{url}: {message}")]
    TooLarge {
        /// The object.
        url: String,
        /// Size and cap.
        message: String,
    },
    /// Anything else: network, timeouts after retries, a client that cannot be built.
    #[error("{url}: {message}")]
    Other {
        /// The object.
        url: String,
        /// What happened (with the error chain).
        message: String,
    },
    /// A local file could not be read or written.
    #[error("{path}: {source}")]
    Local {
        /// The local file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl StoreError {
    /// The ledger's `error_kind`.
    pub fn kind(&self) -> ErrorKind {
        match self {
            StoreError::NotFound(_) => ErrorKind::MissingInput,
            StoreError::Denied { .. } => ErrorKind::FetchDenied,
            StoreError::TooLarge { .. } => ErrorKind::TooLarge,
            StoreError::Other { .. } => ErrorKind::Fetch,
            StoreError::Local { .. } => ErrorKind::Io,
        }
    }

    fn from_os(url: &Remote, e: object_store::Error) -> StoreError {
        let message = chain(&e);
        match e {
            object_store::Error::NotFound { .. } => StoreError::NotFound(url.to_string()),
            object_store::Error::PermissionDenied { .. }
            | object_store::Error::Unauthenticated { .. } => StoreError::Denied {
                url: url.to_string(),
                message,
            },
            _ => StoreError::Other {
                url: url.to_string(),
                message,
            },
        }
    }

    /// Whether starting the transfer again may help.
    fn transient(&self) -> bool {
        matches!(self, StoreError::Other { .. })
    }
}

/// An error and its sources, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// What a download produced.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// BLAKE3 of the bytes, hex (computed while streaming).
    pub hash: String,
}

/// The stores this process talks to, one client per bucket or host, built on first use.
pub struct Stores {
    cfg: StoreConfig,
    clients: Mutex<HashMap<(SchemeKey, String), Arc<dyn ObjectStore>>>,
}

impl std::fmt::Debug for Stores {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stores").field("cfg", &self.cfg).finish()
    }
}

/// The runtime the store clients run on: two worker threads, shared by every caller,
/// never dropped (so no caller can drop it from inside another runtime).
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("klio-store")
            .enable_all()
            .build()
            .expect("cannot start the object-store runtime")
    })
}

fn secs(s: f64) -> String {
    format!("{}ms", (s * 1000.0).round().max(1.0) as u64)
}

impl Stores {
    /// Stores configured by `cfg` (nothing is contacted yet).
    pub fn new(cfg: &StoreConfig) -> Stores {
        Stores {
            cfg: cfg.clone(),
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_secs_f64(self.cfg.retry_backoff_s),
                max_backoff: Duration::from_secs(15),
                base: 2.0,
            },
            max_retries: self.cfg.retries as usize,
            retry_timeout: Duration::from_secs_f64(
                (self.cfg.request_timeout_s * (self.cfg.retries as f64 + 1.0)).min(3600.0),
            ),
        }
    }

    fn client_keys(&self) -> [(ClientConfigKey, String); 3] {
        [
            (
                ClientConfigKey::ConnectTimeout,
                secs(self.cfg.connect_timeout_s),
            ),
            (ClientConfigKey::ReadTimeout, secs(self.cfg.read_timeout_s)),
            (ClientConfigKey::Timeout, secs(self.cfg.request_timeout_s)),
        ]
    }

    fn client(&self, r: &Remote) -> Result<Arc<dyn ObjectStore>, StoreError> {
        if r.scheme() == Scheme::Http && !self.cfg.allow_http {
            // A setting, not a network failure: refused at once, never retried.
            return Err(StoreError::Denied {
                url: r.to_string(),
                message: "plain http:// is refused; set store.allow_http = true to allow it".into(),
            });
        }
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = clients.get(&r.store_id()) {
            return Ok(c.clone());
        }
        let built = self.build(r).map_err(|e| StoreError::Other {
            url: r.to_string(),
            message: format!("cannot set up the client: {}", chain(&e)),
        })?;
        clients.insert(r.store_id(), built.clone());
        Ok(built)
    }

    fn build(&self, r: &Remote) -> object_store::Result<Arc<dyn ObjectStore>> {
        let c = &self.cfg;
        Ok(match r.scheme() {
            Scheme::S3 => {
                use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&r.authority)
                    .with_retry(self.retry());
                for (k, v) in self.client_keys() {
                    b = b.with_config(AmazonS3ConfigKey::Client(k), v);
                }
                if !c.s3_endpoint.is_empty() {
                    b = b.with_endpoint(&c.s3_endpoint);
                }
                if !c.s3_region.is_empty() {
                    b = b.with_region(&c.s3_region);
                } else if std::env::var_os("AWS_REGION").is_none()
                    && std::env::var_os("AWS_DEFAULT_REGION").is_none()
                {
                    b = b.with_region("us-east-1");
                }
                if c.allow_http {
                    b = b.with_allow_http(true);
                }
                Arc::new(b.build()?)
            }
            Scheme::Gcs => {
                use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&r.authority)
                    .with_retry(self.retry());
                for (k, v) in self.client_keys() {
                    b = b.with_config(GoogleConfigKey::Client(k), v);
                }
                if !c.gcs_base_url.is_empty() {
                    b = b.with_config(GoogleConfigKey::BaseUrl, &c.gcs_base_url);
                }
                if c.allow_http {
                    b = b.with_client_options(
                        object_store::ClientOptions::new()
                            .with_allow_http(true)
                            .with_connect_timeout(Duration::from_secs_f64(c.connect_timeout_s))
                            .with_read_timeout(Duration::from_secs_f64(c.read_timeout_s))
                            .with_timeout(Duration::from_secs_f64(c.request_timeout_s)),
                    );
                }
                Arc::new(b.build()?)
            }
            Scheme::Https | Scheme::Http => {
                use object_store::http::HttpBuilder;
                if r.scheme() == Scheme::Http && !c.allow_http {
                    return Err(object_store::Error::Generic {
                        store: "HTTP",
                        source: "plain http:// is refused; set store.allow_http = true to allow it"
                            .into(),
                    });
                }
                let mut b = HttpBuilder::new()
                    .with_url(format!("{}://{}", r.scheme().as_str(), r.authority))
                    .with_retry(self.retry());
                for (k, v) in self.client_keys() {
                    b = b.with_config(k, v);
                }
                if r.scheme() == Scheme::Http {
                    b = b.with_config(ClientConfigKey::AllowHttp, "true");
                }
                Arc::new(b.build()?)
            }
        })
    }

    /// Size and modification time of an object.
    ///
    /// # Errors
    /// Not found, denied, or the store cannot be reached.
    pub fn head(&self, r: &Remote) -> Result<ObjectMeta, StoreError> {
        let client = self.client(r)?;
        rt().block_on(client.head(&r.path()))
            .map_err(|e| StoreError::from_os(r, e))
    }

    /// Streams an object into `dest` (created or truncated), refusing it once it is larger
    /// than `cap` bytes, hashing it on the way. A transfer that breaks off starts again (at
    /// most `store.retries` times, with backoff).
    ///
    /// # Errors
    /// Not found, denied, too large, the store failed after its retries, or `dest` cannot be
    /// written.
    pub fn download(&self, r: &Remote, dest: &Path, cap: u64) -> Result<Downloaded, StoreError> {
        let client = self.client(r)?;
        let mut attempt = 0u32;
        loop {
            let res = rt().block_on(self.download_once(&*client, r, dest, cap));
            match res {
                // Only a body that broke off starts again here: the request itself was
                // already retried by the client (retrying it again would square the tries).
                Err((e, true)) if e.transient() && attempt < self.cfg.retries => {
                    attempt += 1;
                    let delay = self.cfg.retry_backoff_s * f64::powi(2.0, attempt as i32 - 1);
                    tracing::warn!(
                        "{r}: transfer failed ({e}); starting again in {delay:.1} s (try {attempt} of {})",
                        self.cfg.retries
                    );
                    std::thread::sleep(Duration::from_secs_f64(delay.min(15.0)));
                }
                Err((e, _)) => return Err(e),
                Ok(d) => return Ok(d),
            }
        }
    }

    async fn download_once(
        &self,
        client: &dyn ObjectStore,
        r: &Remote,
        dest: &Path,
        cap: u64,
    ) -> Result<Downloaded, (StoreError, bool)> {
        let local = |source| {
            (
                StoreError::Local {
                    path: dest.display().to_string(),
                    source,
                },
                false,
            )
        };
        let res = client
            .get_opts(&r.path(), GetOptions::default())
            .await
            .map_err(|e| (StoreError::from_os(r, e), false))?;
        let too_large = |what: String| {
            (
                StoreError::TooLarge {
                    url: r.to_string(),
                    message: what,
                },
                false,
            )
        };
        if res.meta.size > cap {
            return Err(too_large(format!(
                "{} bytes, over run.max_input_bytes = {cap}",
                res.meta.size
            )));
        }
        let mut file =
            std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(dest).map_err(local)?);
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut stream = res.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| (StoreError::from_os(r, e), true))?;
            size += chunk.len() as u64;
            if size > cap {
                return Err(too_large(format!(
                    "grew past run.max_input_bytes = {cap} while downloading"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).map_err(local)?;
        }
        file.flush().map_err(local)?;
        Ok(Downloaded {
            size,
            hash: hasher.finalize().to_hex().to_string(),
        })
    }

    /// A small object's bytes (at most `max` of them), or `None` when it does not exist.
    ///
    /// # Errors
    /// Denied, too large, or the store cannot be reached.
    pub fn read_small(&self, r: &Remote, max: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client(r)?;
        rt().block_on(async {
            let res = match client.get_opts(&r.path(), GetOptions::default()).await {
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                other => other.map_err(|e| StoreError::from_os(r, e))?,
            };
            if res.meta.size > max {
                return Err(StoreError::TooLarge {
                    url: r.to_string(),
                    message: format!("{} bytes, expected at most {max}", res.meta.size),
                });
            }
            let bytes = res.bytes().await.map_err(|e| StoreError::from_os(r, e))?;
            Ok(Some(bytes.to_vec()))
        })
    }

    /// Uploads a local file as one object. Small files go in one PUT, larger ones as a
    /// multipart upload; either way the object appears whole or not at all (S3 and GCS make a
    /// PUT and a completed multipart upload visible atomically).
    ///
    /// # Errors
    /// The file cannot be read, or the store refused.
    pub fn upload(&self, src: &Path, r: &Remote) -> Result<(), StoreError> {
        const PART: usize = 16 << 20;
        let client = self.client(r)?;
        let local = |source| StoreError::Local {
            path: src.display().to_string(),
            source,
        };
        let len = std::fs::metadata(src).map_err(local)?.len();
        let os = |e| StoreError::from_os(r, e);
        if len <= PART as u64 {
            let bytes = std::fs::read(src).map_err(local)?;
            rt().block_on(client.put(&r.path(), PutPayload::from(bytes)))
                .map_err(os)?;
            return Ok(());
        }
        rt().block_on(async {
            use std::io::Read;
            let mut upload = client.put_multipart(&r.path()).await.map_err(os)?;
            let mut f = std::fs::File::open(src).map_err(local)?;
            let result: Result<(), StoreError> = async {
                loop {
                    let mut buf = vec![0u8; PART];
                    let mut n = 0;
                    while n < PART {
                        let k = f.read(&mut buf[n..]).map_err(local)?;
                        if k == 0 {
                            break;
                        }
                        n += k;
                    }
                    if n == 0 {
                        break;
                    }
                    buf.truncate(n);
                    upload.put_part(PutPayload::from(buf)).await.map_err(os)?;
                    if n < PART {
                        break;
                    }
                }
                upload.complete().await.map_err(os)?;
                Ok(())
            }
            .await;
            if result.is_err() {
                let _ = upload.abort().await;
            }
            result
        })
    }

    /// Deletes an object (a missing one is fine).
    ///
    /// # Errors
    /// The store refused.
    pub fn delete(&self, r: &Remote) -> Result<(), StoreError> {
        let client = self.client(r)?;
        match rt().block_on(client.delete(&r.path())) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::from_os(r, e)),
        }
    }

    /// Every object under `prefix` (whose key starts with it, at a `/` boundary), with size.
    ///
    /// # Errors
    /// The store cannot be listed.
    pub fn list(&self, prefix: &Remote) -> Result<Vec<(Remote, u64)>, StoreError> {
        if !prefix.scheme().lists() {
            return Err(StoreError::Other {
                url: prefix.to_string(),
                message: "a web server cannot be listed; name each file".into(),
            });
        }
        let client = self.client(prefix)?;
        let path = prefix.path();
        rt().block_on(async {
            let mut out = Vec::new();
            let mut stream = client.list(Some(&path));
            while let Some(m) = stream.next().await {
                let m = m.map_err(|e| StoreError::from_os(prefix, e))?;
                out.push((prefix.with_key(m.location.as_ref()), m.size));
            }
            out.sort();
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_into_bucket_and_key() {
        let r = Remote::parse("s3://corpus/a/b%20c.wav").unwrap().unwrap();
        assert_eq!(r.scheme(), Scheme::S3);
        assert_eq!(r.key(), "a/b c.wav");
        assert_eq!(r.to_string(), "s3://corpus/a/b c.wav");
        assert_eq!(r.file_name(), "b c.wav");
        let h = Remote::parse("https://example.org:8443/x/y.flac")
            .unwrap()
            .unwrap();
        assert_eq!(h.to_string(), "https://example.org:8443/x/y.flac");
        assert_eq!(
            Remote::parse("gs://b/out/")
                .unwrap()
                .unwrap()
                .join("e/meta.json")
                .to_string(),
            "gs://b/out/e/meta.json"
        );
        assert!(Remote::parse("/data/x.wav").unwrap().is_none());
        assert!(Remote::parse("file:///data/x.wav").unwrap().is_none());
        assert!(Remote::parse("s3:///key").is_err());
        assert!(Remote::parse("https://h/x.wav?sig=1").is_err());
        assert_eq!(percent_decode("a%2"), Some("a%2".into()));
        // Keys with '%', '?' and '#' print escaped and parse back to the same key.
        let odd = Remote::parse("s3://b/x")
            .unwrap()
            .unwrap()
            .with_key("a%41?b#c.wav");
        let back = Remote::parse(&odd.to_string()).unwrap().unwrap();
        assert_eq!(back.key(), "a%41?b#c.wav");
    }
}
