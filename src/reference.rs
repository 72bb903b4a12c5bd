//! Names: image references (the distribution grammar), Kubernetes names, tags.
//!
//! Pure functions, unit-tested:
//! 1. check a registry address, an image repository and a full reference
//!    against the grammar of `distribution/reference`;
//! 2. check Kubernetes DNS labels and subdomains;
//! 3. form the tag of a commit image.
//!
//! A check that fails says why in a [`NameError`], whose message is the
//! sentence shown where the name was given (a pipeline file's
//! `file:line:column`, an option).

/// Why a name is not one the distribution grammar or Kubernetes takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// A registry address with a scheme or a path.
    #[error("`{address}` is not a registry address: give host[:port], without scheme or path")]
    RegistryNotAddress { address: String },
    /// A registry address whose port is not a number from 0 to 65535.
    #[error("`{address}` has an invalid port `{port}`")]
    RegistryPort { address: String, port: String },
    /// An empty registry address.
    #[error("the registry address is empty")]
    RegistryEmpty,
    /// A bracketed registry host that is not an IPv6 address.
    #[error("`{host}` is not an IPv6 address")]
    RegistryIpv6 { host: String },
    /// A registry host that is not a DNS name.
    #[error("`{address}` is not a valid registry host")]
    RegistryHost { address: String },
    /// An empty image repository.
    #[error("the image name is empty")]
    ImageEmpty,
    /// An image repository with a digest.
    #[error("`{repository}` holds a digest; give the repository only, berth tags each image by commit")]
    ImageDigest { repository: String },
    /// An image repository with a tag (or a registry's port).
    #[error(
        "`{repository}` holds a tag or port; give the repository only (berth tags each image by commit) and put the registry in [registry].address"
    )]
    ImageTag { repository: String },
    /// An image repository a part of which breaks the grammar.
    #[error(
        "`{repository}` is not a valid image repository: each part between `/` must be lowercase letters and digits, separated by `.`, `_`, `__` or dashes (`{component}` is not)"
    )]
    ImagePath { repository: String, component: String },
    /// A full image reference longer than distribution takes.
    #[error("the image reference `{reference}` is longer than 255 characters")]
    ReferenceLength { reference: String },
    /// Not a DNS-1123 label.
    #[error(
        "`{name}` must be at most 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
    )]
    DnsLabel { name: String },
    /// Not a DNS-1123 subdomain.
    #[error(
        "`{name}` must be at most 253 lowercase letters, digits, `-` and `.`, each dot-separated part starting and ending with a letter or digit"
    )]
    DnsSubdomain { name: String },
}

/// Checks `host[:port]` as the distribution grammar's domain.
pub fn check_registry(address: &str) -> Result<(), NameError> {
    let not_address = || NameError::RegistryNotAddress {
        address: address.to_string(),
    };
    if address.contains("://") || address.contains('/') {
        return Err(not_address());
    }
    let host = match address.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host.starts_with('[') => {
            if port.is_empty() || !port.chars().all(|c| c.is_ascii_digit()) || port.parse::<u16>().is_err() {
                return Err(NameError::RegistryPort {
                    address: address.to_string(),
                    port: port.to_string(),
                });
            }
            host
        }
        _ => address,
    };
    if host.is_empty() {
        return Err(NameError::RegistryEmpty);
    }
    if host.contains('/') || address.contains("://") {
        return Err(not_address());
    }
    if host.starts_with('[') && host.ends_with(']') {
        return if host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok() {
            Ok(())
        } else {
            Err(NameError::RegistryIpv6 {
                host: host.to_string(),
            })
        };
    }
    for component in host.split('.') {
        let valid = !component.is_empty()
            && component.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !component.starts_with('-')
            && !component.ends_with('-');
        if !valid {
            return Err(NameError::RegistryHost {
                address: address.to_string(),
            });
        }
    }
    Ok(())
}

/// Checks an image repository path (`sites/www`), without tag or digest, and the
/// full reference's length.
pub fn check_repository(repository: &str, full: Option<&str>) -> Result<(), NameError> {
    if repository.is_empty() {
        return Err(NameError::ImageEmpty);
    }
    if repository.contains('@') {
        return Err(NameError::ImageDigest {
            repository: repository.to_string(),
        });
    }
    if repository.contains(':') {
        return Err(NameError::ImageTag {
            repository: repository.to_string(),
        });
    }
    if let Some(component) = repository
        .split('/')
        .find(|component| !is_path_component(component))
    {
        return Err(NameError::ImagePath {
            repository: repository.to_string(),
            component: component.to_string(),
        });
    }
    if let Some(full) = full
        && full.len() > 255
    {
        return Err(NameError::ReferenceLength {
            reference: full.to_string(),
        });
    }
    Ok(())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn is_path_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut index = 0;
    let mut expect_alphanumeric = true;
    while index < bytes.len() {
        if expect_alphanumeric {
            if !alphanumeric(bytes[index]) {
                return false;
            }
            while index < bytes.len() && alphanumeric(bytes[index]) {
                index += 1;
            }
            expect_alphanumeric = false;
        } else {
            let rest = &component[index..];
            let separator_length = if rest.starts_with("__") {
                2
            } else if rest.starts_with('.') || rest.starts_with('_') {
                1
            } else if rest.starts_with('-') {
                rest.bytes().take_while(|&b| b == b'-').count()
            } else {
                return false;
            };
            index += separator_length;
            if index >= bytes.len() {
                return false;
            }
            expect_alphanumeric = true;
        }
    }
    true
}

/// A DNS-1123 label: what Kubernetes requires of namespaces and container names.
pub fn check_dns_label(name: &str) -> Result<(), NameError> {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(NameError::DnsLabel {
            name: name.to_string(),
        })
    }
}

/// A DNS-1123 subdomain: what Kubernetes requires of Deployment names.
pub fn check_dns_subdomain(name: &str) -> Result<(), NameError> {
    let valid =
        !name.is_empty() && name.len() <= 253 && name.split('.').all(|part| check_dns_label(part).is_ok());
    if valid {
        Ok(())
    } else {
        Err(NameError::DnsSubdomain {
            name: name.to_string(),
        })
    }
}

/// The tag of the image built from `commit`: the full 40-hex commit id.
///
/// The full id rather than an abbreviation: an abbreviation that is unique today
/// can become ambiguous as the repo grows, and a tag must name one commit forever.
/// It is also what `org.opencontainers.image.revision` holds, so tag and label agree.
pub fn commit_tag(commit: &str) -> String {
    commit.to_ascii_lowercase()
}

/// The tag of a commit's image when the commit's own tag already holds an image
/// built from other inputs (template, build args): `<commit>-<source digest, 12>`.
/// Tags never move; the Deployment is pinned by digest either way.
pub fn variant_tag(commit_tag: &str, source_digest: &str) -> String {
    format!("{commit_tag}-{}", &source_digest[..source_digest.len().min(12)])
}

/// The tag of a developer's local build: never a plain commit id.
pub fn dirty_tag(commit: &str, content_digest: &str) -> String {
    format!(
        "{}-dirty-{}",
        &commit[..commit.len().min(12)],
        &content_digest[..content_digest.len().min(12)]
    )
}

/// Short form for people: the first 12 hex digits.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// The tag of a reference `<repository>[:<tag>][@<digest>]`; none when it
/// names none (a registry's port is no tag).
pub fn tag(image: &str) -> Option<&str> {
    let named = image.split_once('@').map_or(image, |(named, _)| named);
    let (repository, tag) = named.rsplit_once(':')?;
    (!repository.is_empty() && !repository.ends_with('/') && !tag.contains('/')).then_some(tag)
}

/// The repository of a reference `<repository>[:<tag>][@<digest>]`, its tag
/// and digest left off (a registry's port stays: it is no tag).
pub fn repository(image: &str) -> &str {
    let named = image.split_once('@').map_or(image, |(named, _)| named);
    tag(named).map_or(named, |tag| &named[..named.len() - tag.len() - 1])
}

/// The digest a reference pins (`…@sha256:…`), if it pins one.
pub fn digest(image: &str) -> Option<&str> {
    image.rsplit_once('@').map(|(_, digest)| digest)
}

/// The commit an image berth pushed was built from, read from its reference
/// (`<repository>:<commit>[-<variant>]@sha256:…`): none for a tag that is not
/// a commit id.
pub fn built_commit(image: &str) -> Option<&str> {
    let tag = tag(image)?;
    let commit = tag.split_once('-').map_or(tag, |(commit, _)| commit);
    let is_commit = matches!(commit.len(), 40 | 64) && commit.bytes().all(|b| b.is_ascii_hexdigit());
    is_commit.then_some(commit)
}

/// A repository as docker shows it (its "familiar" name, as in an image's
/// `RepoDigests`): Docker Hub's `docker.io/` (or `index.docker.io/`) left
/// off, and `library/` too for an official image (`docker.io/library/nginx`
/// is `nginx`); any other repository as it is.
pub fn familiar(repository: &str) -> &str {
    let path = ["docker.io/", "index.docker.io/"]
        .iter()
        .find_map(|domain| repository.strip_prefix(domain));
    let Some(path) = path.or_else(|| repository.strip_prefix("library/").map(|_| repository)) else {
        return repository;
    };
    path.strip_prefix("library/")
        .filter(|name| !name.contains('/'))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {

    #[test]
    fn docker_hubs_repositories_have_their_familiar_names() {
        for (repository, familiar) in [
            ("docker.io/user/img", "user/img"),
            ("index.docker.io/user/img", "user/img"),
            ("docker.io/library/nginx", "nginx"),
            ("library/nginx", "nginx"),
            ("nginx", "nginx"),
            ("user/img", "user/img"),
            ("docker.io/library/a/b", "library/a/b"),
            ("127.0.0.1:5000/sites/www", "127.0.0.1:5000/sites/www"),
            ("ghcr.io/library/x", "ghcr.io/library/x"),
            ("registry.example/docker.io/x", "registry.example/docker.io/x"),
        ] {
            assert_eq!(super::familiar(repository), familiar, "{repository}");
        }
    }

    #[test]
    fn built_commit_reads_the_commit_tag_and_its_variant() {
        let commit = "0123456789abcdef0123456789abcdef01234567";
        let image = format!("127.0.0.1:5000/sites/www:{commit}@sha256:{}", "a".repeat(64));
        assert_eq!(super::built_commit(&image), Some(commit));
        let variant = format!("registry.example:5000/www:{commit}-0123456789ab@sha256:00");
        assert_eq!(super::built_commit(&variant), Some(commit));
        assert_eq!(super::built_commit("127.0.0.1:5000/berth/placeholder:2"), None);
        assert_eq!(super::built_commit("registry.example:5000/www"), None);
        assert_eq!(super::built_commit("nginx:1.27"), None);
    }

    #[test]
    fn a_references_tag_and_digest_are_read_and_a_port_is_no_tag() {
        assert_eq!(super::tag("127.0.0.1:5000/sites/www:abc@sha256:11"), Some("abc"));
        assert_eq!(super::tag("127.0.0.1:5000/sites/www@sha256:11"), None);
        assert_eq!(super::tag("127.0.0.1:5000/sites/www"), None);
        assert_eq!(super::tag("nginx:1.27"), Some("1.27"));
        assert_eq!(
            super::digest("127.0.0.1:5000/sites/www:abc@sha256:11"),
            Some("sha256:11")
        );
        assert_eq!(super::digest("nginx:1.27"), None);
        assert_eq!(
            super::repository("127.0.0.1:5000/sites/www:abc@sha256:11"),
            "127.0.0.1:5000/sites/www"
        );
        assert_eq!(
            super::repository("127.0.0.1:5000/sites/www@sha256:11"),
            "127.0.0.1:5000/sites/www"
        );
        assert_eq!(
            super::repository("127.0.0.1:5000/sites/www"),
            "127.0.0.1:5000/sites/www"
        );
        assert_eq!(super::repository("nginx:1.27"), "nginx");
    }
    use super::*;

    #[test]
    fn registry_addresses() {
        assert!(check_registry("127.0.0.1:5000").is_ok());
        assert!(check_registry("registry.example.com").is_ok());
        assert!(check_registry("localhost:5001").is_ok());
        assert!(check_registry("[::1]:5000").is_ok());
        assert!(check_registry("https://registry.example.com").is_err());
        assert!(check_registry("registry.example.com/path").is_err());
        assert!(check_registry("host:99999").is_err());
        assert!(check_registry("bad_host").is_err());
        assert!(check_registry("").is_err());
    }

    #[test]
    fn repositories_follow_the_distribution_grammar() {
        for good in ["sites/www", "a", "a.b/c_d/e__f", "a--b", "web-de"] {
            assert!(check_repository(good, None).is_ok(), "{good}");
        }
        for bad in [
            "Sites/www",
            "a//b",
            "a/",
            "-a",
            "a_",
            "a___b",
            "www:latest",
            "www@sha256:00",
            "",
        ] {
            assert!(check_repository(bad, None).is_err(), "{bad}");
        }
        assert!(check_repository("a", Some(&"x".repeat(256))).is_err());
    }

    #[test]
    fn kubernetes_names() {
        assert!(check_dns_label("web").is_ok());
        assert!(check_dns_label("Web").is_err());
        assert!(check_dns_label(&"a".repeat(64)).is_err());
        assert!(check_dns_subdomain("www.example").is_ok());
        assert!(check_dns_subdomain("www..example").is_err());
    }

    #[test]
    fn tags() {
        let commit = "A801302C5F310C223E5AE1044E7E288592592C38";
        assert_eq!(commit_tag(commit), commit.to_ascii_lowercase());
        assert_eq!(
            dirty_tag("a801302c5f310c223e5ae1044e7e288592592c38", "0123456789abcdef"),
            "a801302c5f31-dirty-0123456789ab"
        );
        assert_eq!(short("a801302c5f310c22"), "a801302c5f31");
    }
}
