//! Which sites a command works on: the ones named (all when none), narrowed
//! to a shard. `--shard I/N` splits sites deterministically, keeping sites
//! built by one generator run together.

use sha2::{Digest, Sha256};

use crate::config::{Config, Site};
use crate::pipeline::SetupError;

/// The sites named (all when none), or a usage error naming the unknown one.
pub fn named<'c>(config: &'c Config, names: &[String]) -> Result<Vec<&'c Site>, SetupError> {
    if names.is_empty() {
        return Ok(config.sites.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            if let (Some(environment), Some(declared)) = (&config.environment, config.declared_site(name))
                && config.site(name).is_none()
            {
                return Err(SetupError::NotInEnvironment {
                    site: name.clone(),
                    environment: environment.clone(),
                    ships_to: declared
                        .environments
                        .iter()
                        .map(|e| e.environment.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            }
            config
                .site(name)
                .ok_or_else(|| unknown(config, name, &config.sites))
        })
        .collect()
}

/// The declared sites named (all when none), whichever environments they
/// ship to, or a usage error naming the unknown one.
pub fn declared<'c>(config: &'c Config, names: &[String]) -> Result<Vec<&'c Site>, SetupError> {
    if names.is_empty() {
        return Ok(config.declared_sites.iter().collect());
    }
    names
        .iter()
        .map(|name| {
            config
                .declared_site(name)
                .ok_or_else(|| unknown(config, name, &config.declared_sites))
        })
        .collect()
}

/// No site `name` among `known` of `config`.
fn unknown(config: &Config, name: &str, known: &[Site]) -> SetupError {
    SetupError::UnknownSite {
        name: name.to_string(),
        config: config.path.display().to_string(),
        known: known
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// One of N shards, 1-based: `2/4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

/// A `--shard` that names no shard.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Not two numbers around a slash.
    #[error("`{0}` is not I/N (for example 2/4)")]
    NotIOfN(String),
    /// One side is not a number.
    #[error("`{0}` is not a number")]
    NotANumber(String),
    /// I is not between 1 and N.
    #[error("shard {index}/{count} does not exist: I must be between 1 and N")]
    NoSuchShard { index: u32, count: u32 },
}

impl std::str::FromStr for Shard {
    type Err = ShardError;

    fn from_str(text: &str) -> Result<Self, ShardError> {
        let (index, count) = text
            .split_once('/')
            .ok_or_else(|| ShardError::NotIOfN(text.to_string()))?;
        let number = |text: &str| {
            text.parse::<u32>()
                .map_err(|_| ShardError::NotANumber(text.to_string()))
        };
        let (index, count) = (number(index)?, number(count)?);
        if count == 0 || index == 0 || index > count {
            return Err(ShardError::NoSuchShard { index, count });
        }
        Ok(Self { index, count })
    }
}

impl Shard {
    /// Whether `site` belongs to this shard. Sites that share a generator run
    /// (repo, folder, command) always fall in the same shard.
    pub fn contains(self, site: &Site) -> bool {
        let key = format!(
            "{}\0{}\0{}",
            site.repo,
            site.path,
            site.build.as_deref().unwrap_or("")
        );
        let digest = Sha256::digest(key.as_bytes());
        let value = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        value % self.count == self.index - 1
    }
}

/// The sites named (all when none), narrowed to a shard.
pub fn select<'c>(
    config: &'c Config,
    names: &[String],
    shard: Option<Shard>,
) -> Result<Vec<&'c Site>, SetupError> {
    let mut sites = named(config, names)?;
    if let Some(shard) = shard {
        sites.retain(|site| shard.contains(site));
    }
    Ok(sites)
}

/// The sites named (all when none) in each of `views` (one per environment
/// shown): with several views (every environment), a site is left out of
/// those it does not ship to; a name no environment knows is a usage error.
pub fn in_views<'c>(
    views: &'c [Config],
    names: &[String],
    shard: Option<Shard>,
) -> Result<Vec<(&'c Config, Vec<&'c Site>)>, SetupError> {
    views
        .iter()
        .map(|config| {
            let here: Vec<String> = if views.len() > 1 {
                names
                    .iter()
                    .filter(|name| config.site(name).is_some() || config.declared_site(name).is_none())
                    .cloned()
                    .collect()
            } else {
                names.to_vec()
            };
            if !names.is_empty() && here.is_empty() {
                return Ok((config, Vec::new()));
            }
            Ok((config, select(config, &here, shard)?))
        })
        .collect()
}

/// Every site of `selected` once (a site shipping to several environments
/// is mirrored, and its generator run, once for all of them).
pub fn every_site<'c>(selected: &[(&Config, Vec<&'c Site>)]) -> Vec<&'c Site> {
    let mut sites: Vec<&Site> = selected
        .iter()
        .flat_map(|(_, sites)| sites.iter().copied())
        .collect();
    sites.sort_by(|a, b| a.name.cmp(&b.name));
    sites.dedup_by(|a, b| a.name == b.name);
    sites
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_reject_nonsense() {
        assert_eq!("2/4".parse::<Shard>(), Ok(Shard { index: 2, count: 4 }));
        assert!("0/4".parse::<Shard>().is_err());
        assert!("5/4".parse::<Shard>().is_err());
        assert_eq!(
            "x".parse::<Shard>().unwrap_err().to_string(),
            "`x` is not I/N (for example 2/4)"
        );
        assert_eq!(
            "a/4".parse::<Shard>().unwrap_err().to_string(),
            "`a` is not a number"
        );
    }
}
