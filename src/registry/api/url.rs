//! A registry's URLs, built and escaped by the `url` crate: its API's base
//! (the scheme by the rules the Engine follows, Docker Hub's API host), a
//! repository's paths under `/v2/`, a `Location` it answers, and the
//! `METHOD /path` a message shows (never a host, query or signature).

use ::url::Url;
use http::Method;

use crate::registry::api::InvalidReference;

/// The base URL of a registry's API, `scheme://host[:port]/`, and its host
/// (with the port): `http` on loopback (`127.x.x.x`, `localhost`, `[::1]`)
/// or when `plain_http` (the Engine calls the registry insecure), `https`
/// elsewhere, unless the address names its scheme. Docker Hub's API is at
/// `registry-1.docker.io`.
pub(super) fn base_url(registry: &str, plain_http: bool) -> Result<(Url, String), InvalidReference> {
    let (scheme, host) = scheme_and_host(registry, plain_http);
    let base = Url::parse(&format!("{scheme}://{host}/")).map_err(|error| InvalidReference::Registry {
        registry: registry.to_string(),
        error,
    })?;
    Ok((base, host))
}

/// The scheme and API host of a registry address ([`base_url`]).
pub(super) fn scheme_and_host(registry: &str, plain_http: bool) -> (&'static str, String) {
    let registry = registry.trim_end_matches('/');
    let (named, host) = if let Some(host) = registry.strip_prefix("https://") {
        (Some("https"), host)
    } else if let Some(host) = registry.strip_prefix("http://") {
        (Some("http"), host)
    } else {
        (None, registry)
    };
    let host = match host {
        "docker.io" | "index.docker.io" => "registry-1.docker.io",
        other => other,
    };
    let scheme = named.unwrap_or(if plain_http || is_loopback(host) {
        "http"
    } else {
        "https"
    });
    (scheme, host.to_string())
}

/// Whether `host` (with or without a port) is this machine.
fn is_loopback(host: &str) -> bool {
    let name = if let Some(bracketed) = host.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.chars().all(|c| c.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `base/v2/<repository>/<segments…>`, each segment escaped as a path's is
/// (an empty last one ends the path with `/`, as `blobs/uploads/`).
pub(super) fn repository_url(base: &Url, repository: &str, segments: &[&str]) -> Url {
    let mut url = base.clone();
    url.path_segments_mut()
        .expect("an http(s) URL has a path")
        .clear()
        .push("v2")
        .extend(repository.split('/'))
        .extend(segments);
    url
}

/// `url` with `pairs` added to its query, escaped (form-urlencoded), after
/// what it holds already (an upload's `_state`).
pub(in crate::registry) fn with_query(mut url: Url, pairs: &[(&str, &str)]) -> Url {
    if !pairs.is_empty() {
        url.query_pairs_mut().extend_pairs(pairs);
    }
    url
}

/// `METHOD /path` for messages: no scheme, host or query (an upload's state
/// and a storage redirect's signature stay out).
pub(in crate::registry) fn request_text(method: &Method, url: &Url) -> String {
    format!("{method} {}", url.path())
}

/// `host[:port]` of a URL, without the user and password it may hold.
pub(super) fn authority(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_http_and_others_https() {
        for loopback in [
            "127.0.0.1:5000",
            "127.1.2.3",
            "localhost:5000",
            "LOCALHOST",
            "[::1]:5000",
            "[::1]",
        ] {
            assert_eq!(
                scheme_and_host(loopback, false),
                ("http", loopback.to_string()),
                "{loopback}"
            );
        }
        for remote in [
            "ghcr.io",
            "registry.example:5000",
            "10.0.0.1:5000",
            "[2001:db8::1]:443",
            "localhost.example",
        ] {
            assert_eq!(
                scheme_and_host(remote, false),
                ("https", remote.to_string()),
                "{remote}"
            );
        }
        assert_eq!(
            scheme_and_host("docker.io", false),
            ("https", "registry-1.docker.io".into())
        );
        assert_eq!(
            scheme_and_host("http://registry.lan:5000/", false),
            ("http", "registry.lan:5000".into())
        );
        assert_eq!(
            scheme_and_host("https://localhost:5443", false),
            ("https", "localhost:5443".into())
        );
        assert_eq!(
            scheme_and_host("registry.lan:5000", true),
            ("http", "registry.lan:5000".into())
        );
        assert_eq!(
            scheme_and_host("https://registry.lan:5000", true),
            ("https", "registry.lan:5000".into())
        );
    }

    #[test]
    fn repository_urls_are_escaped_and_queries_added_after_the_state() {
        let (base, host) = base_url("127.0.0.1:5001", false).unwrap();
        assert_eq!(host, "127.0.0.1:5001");
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(
            repository_url(&base, "sites/www", &["manifests", &digest]).as_str(),
            format!("http://127.0.0.1:5001/v2/sites/www/manifests/{digest}")
        );
        let mount = with_query(
            repository_url(&base, "sites/www", &["blobs", "uploads", ""]),
            &[("mount", &digest), ("from", "sites/old")],
        );
        assert_eq!(
            mount.as_str(),
            format!(
                "http://127.0.0.1:5001/v2/sites/www/blobs/uploads/?mount=sha256%3A{}&from=sites%2Fold",
                "a".repeat(64)
            )
        );
        assert_eq!(
            request_text(&Method::POST, &mount),
            "POST /v2/sites/www/blobs/uploads/"
        );
        let upload = base.join("/v2/sites/www/blobs/uploads/u-1?_state=xyz").unwrap();
        assert_eq!(
            with_query(upload, &[("digest", &digest)]).as_str(),
            format!(
                "http://127.0.0.1:5001/v2/sites/www/blobs/uploads/u-1?_state=xyz&digest=sha256%3A{}",
                "a".repeat(64)
            )
        );
        assert_eq!(
            repository_url(&base, "sites/www", &["manifests", "a b"]).path(),
            "/v2/sites/www/manifests/a%20b"
        );
    }

    #[test]
    fn request_texts_and_authorities_leave_no_secret() {
        let upload = Url::parse("http://h:1/v2/r/blobs/uploads/u?_state=secret").unwrap();
        assert_eq!(request_text(&Method::PUT, &upload), "PUT /v2/r/blobs/uploads/u");
        let realm = Url::parse("https://user:hunter2@auth.docker.io/token?x=1").unwrap();
        assert_eq!(authority(&realm), "auth.docker.io");
        let realm = Url::parse("https://auth.example:8443/token").unwrap();
        assert_eq!(authority(&realm), "auth.example:8443");
        assert!(matches!(
            base_url("bad host", false),
            Err(InvalidReference::Registry { .. })
        ));
    }
}
