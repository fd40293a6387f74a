//! The endpoint list, the preferred endpoint, and how keys become URL paths.
//!
//! Any healthy node accepts writes (followers forward them to the leader), so the
//! client does not chase the leader on every call: it sticks to one *preferred*
//! endpoint and moves on only when that endpoint fails, jumping to the leader when
//! the server names it. The list itself is replaced when the client syncs it
//! with the cluster's voters (`Client::sync_endpoints`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use crate::error::{Error, Result};

/// Bytes left as they are in a key segment: RFC 3986 "unreserved" characters.
/// Everything else (including `%`, `?`, `#`, spaces and non-ASCII) is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Turns a user-supplied endpoint (`http://127.0.0.1:2379`, `127.0.0.1:2379`,
/// `localhost:2379/`) into the base URL the client prefixes paths with
/// (`http://127.0.0.1:2379`).
pub(crate) fn normalize_endpoint(raw: &str) -> Result<String> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument("empty endpoint".to_owned()));
    }
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let url = reqwest::Url::parse(&with_scheme)
        .map_err(|e| Error::InvalidArgument(format!("endpoint {raw:?}: {e}")))?;
    let scheme = url.scheme();
    if scheme != "http" && scheme != "https" {
        return Err(Error::InvalidArgument(format!(
            "endpoint {raw:?}: only http:// and https:// endpoints are supported"
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Error::InvalidArgument(format!("endpoint {raw:?}: no host")))?;
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(Error::InvalidArgument(format!(
            "endpoint {raw:?}: must not carry a path or query"
        )));
    }
    Ok(match url.port() {
        Some(port) => format!("{scheme}://{host}:{port}"),
        None => format!("{scheme}://{host}"),
    })
}

/// The path (and nothing else) for a key: `/v1/kv/` followed by each
/// `/`-separated segment percent-encoded, separators kept.
///
/// `services/api` → `/v1/kv/services/api`; `/services/api` →
/// `/v1/kv//services/api`; `a b/ü` → `/v1/kv/a%20b/%C3%BC`.
///
/// Segments `.` and `..` are refused: URL normalization (which treats `%2E` like
/// `.`) would silently turn them into a different key.
pub(crate) fn kv_path(key: &str) -> Result<String> {
    let mut path = String::with_capacity(7 + key.len() * 3 / 2);
    path.push_str("/v1/kv/");
    for (i, segment) in key.split('/').enumerate() {
        if segment == "." || segment == ".." {
            return Err(Error::InvalidArgument(format!(
                "key {key:?}: a \".\" or \"..\" path segment cannot be sent in a URL"
            )));
        }
        if i > 0 {
            path.push('/');
        }
        path.extend(utf8_percent_encode(segment, SEGMENT));
    }
    Ok(path)
}

/// One endpoint list, normalized and parsed.
#[derive(Debug)]
struct List {
    /// Shared strings: the preferred endpoint is handed out on every request
    /// without copying it.
    urls: Vec<Arc<str>>,
    /// `urls`, parsed once: a request URL is built from its endpoint's by
    /// setting the path and query, never by parsing scheme and host (IDNA
    /// processing included) again on every request.
    bases: Vec<reqwest::Url>,
}

impl List {
    /// Normalizes and de-duplicates `raw`; an empty list is an error.
    fn parse(raw: &[String]) -> Result<Self> {
        let mut urls: Vec<String> = Vec::with_capacity(raw.len());
        for r in raw {
            let url = normalize_endpoint(r)?;
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
        if urls.is_empty() {
            return Err(Error::InvalidArgument(
                "at least one endpoint is required".to_owned(),
            ));
        }
        let bases = urls
            .iter()
            .map(|u| {
                reqwest::Url::parse(u)
                    .map_err(|e| Error::InvalidArgument(format!("endpoint {u:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let urls = urls.into_iter().map(Arc::from).collect();
        Ok(List { urls, bases })
    }
}

/// The endpoints and which one the client currently prefers.
///
/// The list can be replaced while requests are in flight
/// ([`Endpoints::replace`], from [`crate::Client::sync_endpoints`]): a
/// request works on the list it started with, and an index it reports
/// (`mark_failed`) after a replacement only moves the preference, which
/// the next request takes modulo the new length.
#[derive(Debug)]
pub(crate) struct Endpoints {
    list: arc_swap::ArcSwap<List>,
    preferred: AtomicUsize,
}

impl Endpoints {
    /// Normalizes and de-duplicates `raw`; an empty list is an error.
    pub(crate) fn new(raw: &[String]) -> Result<Self> {
        Ok(Self {
            list: arc_swap::ArcSwap::from_pointee(List::parse(raw)?),
            preferred: AtomicUsize::new(0),
        })
    }

    /// Number of endpoints.
    pub(crate) fn len(&self) -> usize {
        self.list.load().urls.len()
    }

    /// All endpoints, normalized.
    pub(crate) fn urls(&self) -> Vec<String> {
        self.list
            .load()
            .urls
            .iter()
            .map(|u| u.to_string())
            .collect()
    }

    /// Index and URL of the preferred endpoint.
    pub(crate) fn preferred(&self) -> (usize, Arc<str>) {
        let list = self.list.load();
        let i = self.preferred.load(Ordering::Relaxed) % list.urls.len();
        (i, list.urls[i].clone())
    }

    /// Replaces the list with `raw` (normalized and de-duplicated; an empty
    /// or malformed list is refused and the old one kept). The preferred
    /// endpoint stays preferred if it is in the new list. Returns whether
    /// the list changed.
    pub(crate) fn replace(&self, raw: &[String]) -> Result<bool> {
        let new = List::parse(raw)?;
        let old = self.list.load();
        if new.urls == old.urls {
            return Ok(false);
        }
        let (_, preferred) = self.preferred();
        let keep = new.urls.iter().position(|u| *u == preferred).unwrap_or(0);
        self.list.store(Arc::new(new));
        self.preferred.store(keep, Ordering::Relaxed);
        Ok(true)
    }

    /// The URL of `target` (path and query, e.g. `/v1/kv/a?prefix=true`) on
    /// `endpoint`: from the endpoint's parsed URL when it is one of these
    /// endpoints, else parsed whole (an address a caller picked itself).
    pub(crate) fn request_url(&self, endpoint: &str, target: &str) -> Result<reqwest::Url> {
        let list = self.list.load();
        // A raw `#` would start a fragment; built targets never carry one,
        // but such a target is parsed whole so it means what it always did.
        let known = list.urls.iter().position(|u| **u == *endpoint);
        let Some(i) = known.filter(|_| !target.contains('#')) else {
            return reqwest::Url::parse(&format!("{endpoint}{target}"))
                .map_err(|e| Error::InvalidArgument(format!("{endpoint}{target}: {e}")));
        };
        let mut url = list.bases[i].clone();
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (target, None),
        };
        url.set_path(path);
        url.set_query(query);
        Ok(url)
    }

    /// Prefers endpoint `index` (modulo the list's length).
    pub(crate) fn prefer(&self, index: usize) {
        self.preferred
            .store(index % self.len().max(1), Ordering::Relaxed);
    }

    /// Endpoint `failed` did not work: prefer the next one, unless another
    /// request already moved the preference elsewhere.
    pub(crate) fn mark_failed(&self, failed: usize) {
        let next = (failed + 1) % self.len();
        let _ = self
            .preferred
            .compare_exchange(failed, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The server named a leader: prefer it if it is one of our endpoints.
    /// Returns whether the hint matched. Hints for addresses we were not given are
    /// ignored on purpose: a node may advertise a bind address (`0.0.0.0:2379`)
    /// that is not reachable from here.
    pub(crate) fn prefer_hint(&self, hint: &str) -> bool {
        let Ok(url) = normalize_endpoint(hint) else {
            return false;
        };
        // Nodes name the leader by address; the scheme is whatever this
        // client was given (`https://` when the cluster serves TLS).
        let without_scheme = |u: &str| u.split_once("://").map_or(u, |(_, rest)| rest).to_owned();
        let wanted = without_scheme(&url);
        let list = self.list.load();
        match list.urls.iter().position(|u| without_scheme(u) == wanted) {
            Some(i) => {
                self.preferred.store(i, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The preferred endpoint's index and URL, owned, for comparisons.
    fn preferred(eps: &Endpoints) -> (usize, String) {
        let (i, url) = eps.preferred();
        (i, url.to_string())
    }

    #[test]
    fn normalizes_endpoints() {
        let ok = |raw: &str| normalize_endpoint(raw).ok();
        assert_eq!(
            ok("http://127.0.0.1:2379").as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            ok("127.0.0.1:2379").as_deref(),
            Some("http://127.0.0.1:2379")
        );
        assert_eq!(
            ok(" localhost:2379/ ").as_deref(),
            Some("http://localhost:2379")
        );
        assert_eq!(
            ok("http://[::1]:2379").as_deref(),
            Some("http://[::1]:2379")
        );
        assert_eq!(ok("http://example").as_deref(), Some("http://example"));
        assert_eq!(
            ok("https://127.0.0.1:2379/").as_deref(),
            Some("https://127.0.0.1:2379")
        );
        assert!(ok("ftp://127.0.0.1:2379").is_none());
        assert!(ok("").is_none());
        assert!(ok("http://127.0.0.1:2379/v1").is_none());
        assert!(ok("http://127.0.0.1:99999").is_none());
    }

    #[test]
    fn encodes_key_paths() {
        let p = |k: &str| kv_path(k).ok();
        assert_eq!(p("app/mode").as_deref(), Some("/v1/kv/app/mode"));
        assert_eq!(
            p("/services/api/timeout").as_deref(),
            Some("/v1/kv//services/api/timeout")
        );
        assert_eq!(p("app/").as_deref(), Some("/v1/kv/app/"));
        assert_eq!(p("").as_deref(), Some("/v1/kv/"));
        assert_eq!(p("a b/ü").as_deref(), Some("/v1/kv/a%20b/%C3%BC"));
        assert_eq!(p("q?x=1#f%").as_deref(), Some("/v1/kv/q%3Fx%3D1%23f%25"));
        assert_eq!(p("v1.2_x-y~z").as_deref(), Some("/v1/kv/v1.2_x-y~z"));
        assert_eq!(p("a//b").as_deref(), Some("/v1/kv/a//b"));
        assert!(p("a/../b").is_none());
        assert!(p("./b").is_none());
        assert!(p("a/.").is_none());
        assert_eq!(p("a/.../b").as_deref(), Some("/v1/kv/a/.../b"));
    }

    #[test]
    fn encoded_paths_survive_url_parsing() {
        for key in ["/services/api", "a b/ü", "x%2Fy", "q?x#y", "a//b", "app/"] {
            let Ok(path) = kv_path(key) else {
                panic!("{key} refused");
            };
            let url = reqwest::Url::parse(&format!("http://h:1{path}"));
            assert_eq!(url.map(|u| u.path().to_owned()).ok(), Some(path), "{key}");
        }
    }

    #[test]
    fn request_urls_equal_the_whole_url_parsed() {
        let raw: Vec<String> = ["http://127.0.0.1:2379", "https://localhost:1", "[::1]:7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Ok(eps) = Endpoints::new(&raw) else {
            panic!("valid endpoints refused");
        };
        let mut targets: Vec<String> = ["/services/api", "a b/ü", "x%2Fy", "q?x#y", "a//b", "app/"]
            .iter()
            .filter_map(|k| kv_path(k).ok())
            .collect();
        targets.extend(
            [
                "/v1/kv/a?prefix=true&limit=3",
                "/v1/kv/a?",
                "/v1/watch?key=a%3Fb&start_revision=4",
                "/v1/txn",
                "/v1/kv/raw#fragment",
                "/",
            ]
            .map(String::from),
        );
        let others = ["http://127.0.0.1:9".to_owned()];
        for endpoint in eps.urls().iter().chain(&others) {
            for target in &targets {
                let built = eps.request_url(endpoint, target).map(|u| u.to_string());
                let parsed = reqwest::Url::parse(&format!("{endpoint}{target}"))
                    .map(|u| u.to_string())
                    .ok();
                assert_eq!(built.ok(), parsed, "{endpoint} {target}");
            }
        }
    }

    #[test]
    fn leader_hints_match_https_endpoints_by_address() {
        let raw: Vec<String> = ["https://127.0.0.1:1", "https://127.0.0.1:2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Ok(eps) = Endpoints::new(&raw) else {
            panic!("valid endpoints refused");
        };
        // Nodes name the leader by address, or by an http:// URL.
        assert!(eps.prefer_hint("127.0.0.1:2"));
        assert_eq!(preferred(&eps), (1, "https://127.0.0.1:2".to_owned()));
        assert!(eps.prefer_hint("http://127.0.0.1:1"));
        assert_eq!(eps.preferred().0, 0);
        assert!(!eps.prefer_hint("127.0.0.1:3"));
    }

    #[test]
    fn endpoint_list() {
        assert!(Endpoints::new(&[]).is_err());
        let raw: Vec<String> = ["127.0.0.1:1", "http://127.0.0.1:1", "127.0.0.1:2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let Ok(eps) = Endpoints::new(&raw) else {
            panic!("valid endpoints refused");
        };
        assert_eq!(eps.len(), 2);
        assert_eq!(preferred(&eps), (0, "http://127.0.0.1:1".to_owned()));
        eps.mark_failed(0);
        assert_eq!(eps.preferred().0, 1);
        // A stale failure report does not move the preference again.
        eps.mark_failed(0);
        assert_eq!(eps.preferred().0, 1);
        eps.mark_failed(1);
        assert_eq!(eps.preferred().0, 0);
        assert!(eps.prefer_hint("127.0.0.1:2"));
        assert_eq!(eps.preferred().0, 1);
        assert!(!eps.prefer_hint("0.0.0.0:2379"));
        assert_eq!(eps.preferred().0, 1);
    }

    #[test]
    fn replacing_the_list_keeps_the_preferred_endpoint_when_it_can() {
        let list = |raw: &[&str]| raw.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let Ok(eps) = Endpoints::new(&list(&["127.0.0.1:1", "127.0.0.1:2"])) else {
            panic!("valid endpoints refused");
        };
        eps.mark_failed(0);
        assert_eq!(preferred(&eps).1, "http://127.0.0.1:2");
        // Still listed: still preferred, at its new index.
        assert!(matches!(
            eps.replace(&list(&["127.0.0.1:3", "127.0.0.1:2"])),
            Ok(true)
        ));
        assert_eq!(preferred(&eps), (1, "http://127.0.0.1:2".to_owned()));
        assert_eq!(
            eps.urls(),
            list(&["http://127.0.0.1:3", "http://127.0.0.1:2"])
        );
        // The same list again changes nothing.
        assert!(matches!(
            eps.replace(&list(&["http://127.0.0.1:3", "127.0.0.1:2"])),
            Ok(false)
        ));
        // Gone: the first of the new list.
        assert!(matches!(
            eps.replace(&list(&["127.0.0.1:4", "127.0.0.1:5"])),
            Ok(true)
        ));
        assert_eq!(preferred(&eps), (0, "http://127.0.0.1:4".to_owned()));
        // Empty or malformed lists are refused and the old one kept.
        assert!(eps.replace(&[]).is_err());
        assert!(eps.replace(&list(&["ftp://x:1"])).is_err());
        assert_eq!(
            eps.urls(),
            list(&["http://127.0.0.1:4", "http://127.0.0.1:5"])
        );
        // A failure reported against an index of the old, longer list only
        // moves the preference within the new one.
        let Ok(eps) = Endpoints::new(&list(&["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"])) else {
            panic!("valid endpoints refused");
        };
        eps.mark_failed(0);
        eps.mark_failed(1);
        assert!(matches!(eps.replace(&list(&["127.0.0.1:9"])), Ok(true)));
        eps.mark_failed(2);
        assert_eq!(preferred(&eps), (0, "http://127.0.0.1:9".to_owned()));
        assert!(eps.request_url("http://127.0.0.1:9", "/v1/kv/a").is_ok());
    }
}
