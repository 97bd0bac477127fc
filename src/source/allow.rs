//! What an event may name: the allow-list `serve` checks every event's input against before
//! anything of it is opened. Secure by default: local paths only under the inbox folder,
//! `serve.klio.input_location` and `serve.allow_paths`; object-store and web URLs only under
//! `serve.klio.input_location` and `serve.allow_urls`; a web host that is (or resolves to) a
//! loopback, private, link-local or otherwise non-public address only with
//! `serve.allow_private_hosts`. `process` (a person at a shell) is not checked.
//!
//! A path is checked twice: as written with `.` and `..` resolved lexically, then with its
//! symlinks resolved, so neither `..` nor a symlink leads out of a root. Every refusal has
//! the same reason ([`FORBIDDEN`]): the publisher learns nothing about what lies outside the
//! roots, not even whether it exists.

use std::net::{IpAddr, ToSocketAddrs};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, Result};

use crate::item::Source;
use crate::store::{Remote, Scheme};

use super::settings::{ServeConfig, SourceKind};

/// The dead-letter reason of every refused event.
pub const FORBIDDEN: &str = "the input is not in a location this service may read \
     (serve.allow_paths, serve.allow_urls, serve.klio.input_location)";

/// One allowed folder: as configured (made absolute, `..` resolved) and with its symlinks
/// resolved.
#[derive(Debug, Clone)]
struct Root {
    written: PathBuf,
    real: PathBuf,
}

/// One allowed URL prefix.
#[derive(Debug, Clone)]
struct UrlPrefix {
    scheme: Scheme,
    authority: String,
    /// Key prefix; matched as a string (`audio/clip-` allows `audio/clip-1.wav`).
    key: String,
}

/// The locations events may name.
#[derive(Debug, Clone, Default)]
pub struct AllowList {
    roots: Vec<Root>,
    urls: Vec<UrlPrefix>,
    private_hosts: bool,
}

/// `path` made absolute with `.` and `..` resolved lexically (no file system access).
fn lexical(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                // 100.64.0.0/10, carrier-grade NAT.
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

impl AllowList {
    /// The allow-list of `[serve]`: its `allow_paths`, `allow_urls` and
    /// `allow_private_hosts`, the inbox folder (with `source = "inbox"`) and
    /// `klio.input_location`.
    ///
    /// A folder of `allow_paths` that does not exist (yet) is taken as written, with a warning.
    ///
    /// # Errors
    /// A URL of `allow_urls` (or `klio.input_location`) that does not parse.
    pub fn from_config(cfg: &ServeConfig) -> Result<AllowList> {
        let mut allow = AllowList {
            private_hosts: cfg.allow_private_hosts,
            ..AllowList::default()
        };
        for p in &cfg.allow_paths {
            let real = std::fs::canonicalize(p).unwrap_or_else(|e| {
                tracing::warn!(
                    "serve.allow_paths: {} cannot be resolved ({e}); taken as written",
                    p.display()
                );
                lexical(p)
            });
            allow.add_root(p, real);
        }
        if cfg.source == SourceKind::Inbox {
            if let Ok(real) = std::fs::canonicalize(&cfg.inbox.dir) {
                allow.add_root(&cfg.inbox.dir, real);
            }
        }
        for u in &cfg.allow_urls {
            allow
                .add_url(u)
                .with_context(|| format!("serve.allow_urls: {u:?}"))?;
        }
        let loc = &cfg.klio.input_location;
        if !loc.is_empty() {
            match Remote::parse(loc) {
                Ok(Some(_)) => allow
                    .add_url(loc)
                    .with_context(|| format!("serve.klio.input_location: {loc:?}"))?,
                Ok(None) => {
                    // A folder, or a folder and the start of a file name.
                    let p = Path::new(loc.strip_prefix("file://").unwrap_or(loc));
                    let dir = if loc.ends_with('/') {
                        p
                    } else {
                        p.parent().unwrap_or(p)
                    };
                    if let Ok(real) = std::fs::canonicalize(dir) {
                        allow.add_root(dir, real);
                    }
                }
                Err(e) => anyhow::bail!("serve.klio.input_location: {e}"),
            }
        }
        Ok(allow)
    }

    fn add_root(&mut self, written: &Path, real: PathBuf) {
        self.roots.push(Root {
            written: lexical(written),
            real,
        });
    }

    fn add_url(&mut self, u: &str) -> Result<()> {
        let r = Remote::parse(u)
            .map_err(anyhow::Error::msg)?
            .with_context(|| "not an s3://, gs://, https:// or http:// URL")?;
        self.urls.push(UrlPrefix {
            scheme: r.scheme(),
            authority: r.authority().to_ascii_lowercase(),
            key: r.key().to_string(),
        });
        Ok(())
    }

    /// Whether an event may name `source`.
    ///
    /// # Errors
    /// [`FORBIDDEN`], whatever the reason.
    pub fn check(&self, source: &Source) -> Result<(), &'static str> {
        let ok = match source {
            Source::Path(p) => self.path_allowed(p),
            Source::Remote(r) => self.url_allowed(r),
        };
        if ok {
            Ok(())
        } else {
            Err(FORBIDDEN)
        }
    }

    fn path_allowed(&self, p: &Path) -> bool {
        let written = lexical(p);
        let under =
            |root: &Root| written.starts_with(&root.written) || written.starts_with(&root.real);
        if !self.roots.iter().any(under) {
            return false;
        }
        match std::fs::canonicalize(&written) {
            // Symlinks resolved, it must still be inside a root.
            Ok(real) => self.roots.iter().any(|r| real.starts_with(&r.real)),
            // Missing (inside a root): the fetch reports it.
            Err(_) => true,
        }
    }

    fn url_allowed(&self, r: &Remote) -> bool {
        // Keys are literal in a bucket, but a web server may resolve dot segments.
        if r.key().split('/').any(|s| s == "." || s == "..") {
            return false;
        }
        let authority = r.authority().to_ascii_lowercase();
        let listed = self.urls.iter().any(|u| {
            u.scheme == r.scheme() && u.authority == authority && r.key().starts_with(&u.key)
        });
        if !listed {
            return false;
        }
        match r.scheme() {
            Scheme::Https | Scheme::Http if !self.private_hosts => host_is_public(&authority),
            _ => true,
        }
    }
}

/// Whether every address `authority` (`host[:port]`) resolves to is public. A name that
/// does not resolve is let through: the fetch then fails, saying nothing more.
fn host_is_public(authority: &str) -> bool {
    let with_port = if authority.starts_with('[') || authority.matches(':').count() == 1 {
        authority.to_string()
    } else {
        format!("{authority}:443")
    };
    let host = with_port
        .rsplit_once(':')
        .map_or(with_port.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return is_public(ip);
    }
    if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") {
        return false;
    }
    match with_port.to_socket_addrs() {
        Ok(addrs) => addrs.into_iter().all(|a| is_public(a.ip())),
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(dir: &Path, urls: &[&str]) -> AllowList {
        let cfg = ServeConfig {
            source: SourceKind::Nats,
            allow_paths: vec![dir.to_path_buf()],
            allow_urls: urls.iter().map(|u| u.to_string()).collect(),
            ..ServeConfig::default()
        };
        AllowList::from_config(&cfg).unwrap()
    }

    fn path(p: &Path) -> Source {
        Source::Path(p.to_path_buf())
    }

    #[test]
    fn paths_only_under_the_roots_even_through_dot_dot_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("audio");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.wav"), b"x").unwrap();
        std::fs::write(tmp.path().join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(tmp.path().join("secret"), root.join("link.wav")).unwrap();
        let allow = list(&root, &[]);
        assert!(allow.check(&path(&root.join("a.wav"))).is_ok());
        // Missing inside a root: allowed (the fetch says missing_input).
        assert!(allow.check(&path(&root.join("gone.wav"))).is_ok());
        for bad in [
            tmp.path().join("secret"),
            root.join("../secret"),
            root.join("../gone"),
            root.join("link.wav"),
            PathBuf::from("/etc/passwd"),
        ] {
            assert_eq!(
                allow.check(&path(&bad)),
                Err(FORBIDDEN),
                "{}",
                bad.display()
            );
        }
        // Nothing configured: nothing allowed.
        let none = AllowList::from_config(&ServeConfig {
            source: SourceKind::Nats,
            ..ServeConfig::default()
        })
        .unwrap();
        assert_eq!(none.check(&path(&root.join("a.wav"))), Err(FORBIDDEN));
    }

    #[test]
    fn urls_only_under_the_prefixes_and_never_private_hosts() {
        let tmp = tempfile::tempdir().unwrap();
        let allow = list(
            tmp.path(),
            &[
                "s3://corpus/audio/",
                "https://media.example.com/pub/",
                "https://127.0.0.1/x/",
                "https://10.1.2.3/x/",
            ],
        );
        let url = |u: &str| Source::Remote(Remote::parse(u).unwrap().unwrap());
        assert!(allow.check(&url("s3://corpus/audio/a.wav")).is_ok());
        for bad in [
            "s3://corpus/other/a.wav",
            "s3://other/audio/a.wav",
            "gs://corpus/audio/a.wav",
            "s3://corpus/audio/../secret",
            "https://media.example.com/private/a.wav",
            "https://127.0.0.1/x/a.wav",
            "https://10.1.2.3/x/a.wav",
        ] {
            assert_eq!(allow.check(&url(bad)), Err(FORBIDDEN), "{bad}");
        }
        let private = AllowList {
            private_hosts: true,
            ..allow.clone()
        };
        assert!(private.check(&url("https://127.0.0.1/x/a.wav")).is_ok());
    }

    #[test]
    fn non_public_addresses() {
        for ip in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2001:4860:4860::8888"] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
        assert!(!host_is_public("localhost:8080"));
        assert!(!host_is_public("[::1]:443"));
    }
}
