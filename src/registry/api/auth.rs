//! Logging in where a registry's 401 says how (`WWW-Authenticate`): HTTP
//! Basic with the credentials there are, or a Bearer token from the
//! registry's token service (Docker Hub, GHCR), asked with a refresh token
//! or Basic credentials, or anonymously for public images. Every secret is
//! a header value marked sensitive.

use ::url::Url;
use base64::Engine as _;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Limited};

use crate::registry::RegistryAuth;
use crate::registry::api::url::{authority, request_text, with_query};
use crate::registry::api::{
    ApiError, Body, ERROR_BODY_LIMIT, InvalidReference, REQUEST_TIMEOUT, Session, Unreachable, drain,
    excerpt, full,
};

/// The secrets of a [`RegistryAuth`], as header values marked sensitive.
pub(super) struct Credentials {
    /// `Basic base64(user:password)`.
    basic: Option<HeaderValue>,
    /// An OAuth2 refresh token (`identitytoken` in Docker's config.json).
    refresh_token: Option<String>,
}

impl Credentials {
    pub(super) fn of(auth: &RegistryAuth) -> Self {
        let sensitive = |text: String| {
            HeaderValue::try_from(text).ok().map(|mut value| {
                value.set_sensitive(true);
                value
            })
        };
        let Some(credentials) = &auth.credentials else {
            return Self {
                basic: None,
                refresh_token: None,
            };
        };
        // `resolve_credentials` gives a user name and password, or an
        // identity token (`config.json`'s `auth` is decoded there).
        let basic = match (&credentials.username, &credentials.password) {
            (Some(username), Some(password)) => {
                let encoded =
                    base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                sensitive(format!("Basic {encoded}"))
            }
            _ => None,
        };
        Self {
            basic,
            refresh_token: credentials
                .identitytoken
                .clone()
                .filter(|token| !token.is_empty()),
        }
    }
}

/// How a registry's 401 asks to log in (`WWW-Authenticate`).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Challenge {
    Basic,
    Bearer(Bearer),
}

/// A Bearer challenge: where to get a token, for what.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Bearer {
    realm: String,
    service: Option<String>,
    /// Space-separated scopes (`repository:sites/www:pull,push`).
    scope: Option<String>,
}

impl Session<'_> {
    /// Sets the authorization `challenge` asks for, or says the registry refused.
    pub(super) async fn authenticate(&self, challenge: Option<Challenge>) -> Result<(), ApiError> {
        let credentials = Credentials::of(self.auth);
        let authorization = match challenge {
            Some(Challenge::Basic) => credentials.basic.clone(),
            Some(Challenge::Bearer(bearer)) => Some(self.token(&bearer, &credentials).await?),
            None => None,
        };
        let Some(mut authorization) = authorization else {
            return Err(self.refused(StatusCode::UNAUTHORIZED));
        };
        authorization.set_sensitive(true);
        let mut current = self.authorization.lock().expect("not poisoned");
        if current.as_ref() == Some(&authorization) {
            // The same credentials again would be refused again.
            return Err(self.refused(StatusCode::UNAUTHORIZED));
        }
        *current = Some(authorization);
        Ok(())
    }

    /// A Bearer token from the challenge's token service, asked with the
    /// credentials there are (none: an anonymous token, for public images).
    async fn token(&self, bearer: &Bearer, credentials: &Credentials) -> Result<HeaderValue, ApiError> {
        let realm = Url::parse(&bearer.realm).map_err(|error| InvalidReference::TokenService {
            registry: self.auth.registry.clone(),
            error,
        })?;
        let realm_host = authority(&realm);
        let request =
            token_request(bearer, &realm, credentials).map_err(|error| InvalidReference::Request {
                request: request_text(&Method::GET, &realm),
                error,
            })?;
        let unreachable = |cause| ApiError::Unreachable {
            registry: realm_host.clone(),
            cause,
        };
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| unreachable(Unreachable::Timeout(REQUEST_TIMEOUT)))?
            .map_err(|error| unreachable(Unreachable::Connection(error)))?;
        let status = answer.status();
        if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            drain(answer).await;
            return Err(self.refused(status));
        }
        let body = Limited::new(answer.into_body(), ERROR_BODY_LIMIT)
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        let token = status
            .is_success()
            .then(|| token_of(&body))
            .flatten()
            .ok_or_else(|| ApiError::Http {
                registry: realm_host.clone(),
                request: request_text(&Method::GET, &realm),
                status: status.as_u16(),
                body: if status.is_success() {
                    "no token in the answer".to_string()
                } else {
                    excerpt(&body)
                },
            })?;
        // The header value's error would quote the token.
        HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| ApiError::Http {
            registry: self.auth.registry.clone(),
            request: request_text(&Method::GET, &realm),
            status: status.as_u16(),
            body: "the token is not a valid header value".to_string(),
        })
    }
}

/// The request for a token: an OAuth2 POST with a refresh token when there is
/// one, else a GET with Basic credentials (if any).
fn token_request(
    bearer: &Bearer,
    realm: &Url,
    credentials: &Credentials,
) -> Result<http::Request<Body>, http::Error> {
    let mut query: Vec<(&str, &str)> = Vec::new();
    if let Some(service) = &bearer.service {
        query.push(("service", service));
    }
    for scope in bearer.scope.iter().flat_map(|scope| scope.split_whitespace()) {
        query.push(("scope", scope));
    }
    let builder = http::Request::builder().header(header::USER_AGENT, crate::http::USER_AGENT);
    if let Some(refresh_token) = &credentials.refresh_token {
        query.extend([
            ("grant_type", "refresh_token"),
            ("client_id", "berth"),
            ("refresh_token", refresh_token.as_str()),
        ]);
        let form = ::url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&query)
            .finish();
        return builder
            .method(Method::POST)
            .uri(realm.as_str())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(full(Bytes::from(form)));
    }
    let url = with_query(realm.clone(), &query);
    let mut builder = builder.method(Method::GET).uri(url.as_str());
    if let Some(basic) = &credentials.basic {
        builder = builder.header(header::AUTHORIZATION, basic.clone());
    }
    builder.body(full(Bytes::new()))
}

/// The token in a token service's JSON answer (`token`, or OAuth2's `access_token`).
fn token_of(body: &[u8]) -> Option<String> {
    let answer: serde_json::Value = serde_json::from_slice(body).ok()?;
    ["token", "access_token"]
        .iter()
        .find_map(|key| answer.get(key).and_then(serde_json::Value::as_str))
        .filter(|token| !token.is_empty())
        .map(str::to_string)
}

/// Parses one `WWW-Authenticate` value: `Basic realm="…"` or
/// `Bearer realm="…",service="…",scope="…"`. `None` for other schemes, or a
/// Bearer challenge without a realm.
pub(super) fn parse_challenge(value: &str) -> Option<Challenge> {
    let value = value.trim();
    let (scheme, parameters) = value.split_once(char::is_whitespace).unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let parameters = parse_parameters(parameters);
    let get = |name: &str| {
        parameters
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
    };
    Some(Challenge::Bearer(Bearer {
        realm: get("realm").filter(|realm| !realm.is_empty())?,
        service: get("service"),
        scope: get("scope"),
    }))
}

/// `key=value` and `key="quoted, \"value\""` pairs, separated by commas.
fn parse_parameters(text: &str) -> Vec<(String, String)> {
    let mut parameters = Vec::new();
    let mut characters = text.chars().peekable();
    loop {
        while characters.next_if(|c| c.is_whitespace() || *c == ',').is_some() {}
        let key: String = characters.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().to_string();
        if key.is_empty() {
            return parameters;
        }
        while characters.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if characters.next_if_eq(&'"').is_some() {
            while let Some(character) = characters.next() {
                match character {
                    '\\' => value.extend(characters.next()),
                    '"' => break,
                    other => value.push(other),
                }
            }
        } else {
            while let Some(character) = characters.next_if(|c| *c != ',') {
                value.push(character);
            }
            value = value.trim_end().to_string();
        }
        parameters.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_and_ghcr_bearer_challenges_are_parsed() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#
            ),
            Some(Challenge::Bearer(Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }))
        );
        assert_eq!(
            parse_challenge(
                r#"bearer realm="https://ghcr.io/token", service="ghcr.io", scope="repository:o/a:pull,push repository:o/b:pull""#
            ),
            Some(Challenge::Bearer(Bearer {
                realm: "https://ghcr.io/token".into(),
                service: Some("ghcr.io".into()),
                scope: Some("repository:o/a:pull,push repository:o/b:pull".into()),
            }))
        );
    }

    #[test]
    fn challenge_values_may_be_unquoted_or_hold_commas_and_escaped_quotes() {
        assert_eq!(
            parse_challenge(
                r#"Bearer realm=https://r.example/token,error="insufficient_scope",scope="a,\"b\"""#
            ),
            Some(Challenge::Bearer(Bearer {
                realm: "https://r.example/token".into(),
                service: None,
                scope: Some(r#"a,"b""#.into()),
            }))
        );
    }

    #[test]
    fn basic_unknown_and_realmless_challenges() {
        assert_eq!(
            parse_challenge(r#"Basic realm="berth-stack""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("BASIC"), Some(Challenge::Basic));
        assert_eq!(parse_challenge(r#"Digest realm="x", nonce="y""#), None);
        assert_eq!(parse_challenge(r#"Bearer service="x""#), None);
        assert_eq!(parse_challenge(""), None);
    }

    #[test]
    fn the_token_request_sends_each_scope_and_basic_or_refresh_credentials() {
        let bearer = Bearer {
            realm: "https://auth.example/token".into(),
            service: Some("registry.example".into()),
            scope: Some("repository:a:pull repository:b:pull,push".into()),
        };
        let realm = Url::parse(&bearer.realm).unwrap();
        let basic = Credentials {
            basic: HeaderValue::try_from("Basic dTpw").ok(),
            refresh_token: None,
        };
        let request = token_request(&bearer, &realm, &basic).unwrap();
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().to_string(),
            "https://auth.example/token?service=registry.example&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull%2Cpush"
        );
        assert_eq!(request.headers()[header::AUTHORIZATION], "Basic dTpw");
        let refresh = Credentials {
            basic: None,
            refresh_token: Some("refresh-me".into()),
        };
        let request = token_request(&bearer, &realm, &refresh).unwrap();
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().to_string(), "https://auth.example/token");
        assert!(request.headers().get(header::AUTHORIZATION).is_none());
        assert_eq!(
            token_of(br#"{"access_token":"t1","expires_in":300}"#),
            Some("t1".into())
        );
        assert_eq!(
            token_of(br#"{"token":"t2","access_token":"t2"}"#),
            Some("t2".into())
        );
        assert_eq!(token_of(br#"{"token":""}"#), None);
    }

    #[test]
    fn credentials_become_sensitive_basic_headers() {
        let auth = RegistryAuth {
            registry: "r".into(),
            credentials: Some(bollard::auth::DockerCredentials {
                username: Some("user".into()),
                password: Some("hunter2".into()),
                ..Default::default()
            }),
            source_description: "test".into(),
        };
        let credentials = Credentials::of(&auth);
        let basic = credentials.basic.unwrap();
        assert_eq!(basic, "Basic dXNlcjpodW50ZXIy");
        assert!(basic.is_sensitive());
        assert!(!format!("{basic:?}").contains("dXNlcjpodW50ZXIy"));
    }
}
