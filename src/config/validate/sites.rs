//! `[[site]]`: its repo, paths, template or Dockerfile, image, Deployment
//! (and its Deployment and webhook in each environment it ships to, none
//! shipped to by two sites), and `helm`, the chart's values keys that name
//! the image.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use toml::Spanned;

use crate::config::table::TableReader;
use crate::config::validate::files::{check_relative_path, normalise_path};
use crate::config::validate::{Checker, known_list};
use crate::config::{
    DeploymentTarget, Environment, HELM_REPOSITORY_KEY, HELM_TAG_KEY, HelmImageKeys, HelmValues, ImageSource,
    Notify, Registry, Repo, Site, SiteEnvironment,
};
use crate::reference;

/// What a site is checked against: the tables read before the sites.
pub(super) struct SiteContext<'a> {
    pub(super) repos: &'a [Repo],
    /// Every repo name given, valid repo or not (a site naming one is not
    /// reported twice).
    pub(super) repo_names: &'a HashSet<String>,
    pub(super) templates_dir: &'a Path,
    pub(super) registry: Option<&'a Registry>,
    pub(super) default_namespace: &'a str,
    /// The environments declared (sites ship to all of them unless they say).
    pub(super) environments: &'a [Environment],
}

/// What the sites read so far have taken: names, and Deployment containers
/// (per kubeconfig context: two environments may share a cluster).
#[derive(Default)]
pub(super) struct Taken {
    names: HashSet<String>,
    /// Per container: the index and name of the site that ships to it.
    targets: HashMap<(Option<String>, DeploymentTarget), (usize, String)>,
}

/// A `deployment` table's keys as written (each may be left out).
#[derive(Default)]
struct DeploymentKeys {
    namespace: Option<String>,
    name: Option<String>,
    container: Option<String>,
}

/// One `[site.environment.<name>]` as written.
struct SiteOverride {
    name: Spanned<String>,
    deployment: DeploymentKeys,
    notify: Option<Notify>,
}

impl Checker<'_> {
    /// One `[[site]]`; its name and Deployment are added to `taken` (a
    /// duplicate is reported).
    pub(super) fn site(
        &mut self,
        index: usize,
        mut table: TableReader<'_>,
        context: &SiteContext<'_>,
        taken: &mut Taken,
    ) -> Option<Site> {
        let name = self.site_name(index, &mut table, taken);
        let repo = self.site_repo(&mut table, context);
        let site_path = self.relative_path(&mut table, "path");
        let git_history = table.boolean(self, "git_history").unwrap_or(false);
        let keep_last = table.count(self, "keep_last", 1);
        let keep_days = table.count(self, "keep_days", 0);
        let build = self.build_command(&mut table);
        let output = self.relative_path(&mut table, "output");
        let image_source = self.image_source(&mut table, context.templates_dir);
        let build_args = table.string_map(self, "build_args");
        let image = self.site_image(&mut table, context);
        let deployment = table
            .table(self, "deployment", true)
            .map(|deployment| self.deployment(deployment, true));
        let listed = self.site_environments(&mut table, context);
        let overrides = self.site_overrides(&mut table, listed.as_deref());
        let helm = table
            .table(self, "helm", false)
            .map(|helm| self.helm(helm))
            .unwrap_or_default();
        table.finish(self);
        // Who ships where is checked whenever the name and Deployment were
        // read, whatever else is wrong with the site.
        let (name, (keys, span)) = (name?, deployment?);
        let default_target = default_target(&keys, context)?;
        let environments = resolve_environments(
            listed.as_deref().unwrap_or_default(),
            &overrides,
            &keys,
            &default_target,
            context,
        );
        self.take_targets(
            index,
            name.get_ref(),
            &span,
            &default_target,
            &environments,
            context,
            taken,
        );
        let (Some(repo), Some(image_source), Some(image)) = (repo, image_source, image) else {
            return None;
        };
        Some(Site {
            name: name.into_inner(),
            repo: repo.into_inner(),
            path: normalise_path(site_path.as_ref().map_or(".", |p| p.get_ref())),
            build: build.map(Spanned::into_inner),
            output: output.map(|o| normalise_path(o.get_ref())),
            image_source,
            build_args: build_args.unwrap_or_default(),
            git_history,
            generator_env: std::collections::BTreeMap::new(),
            image: image.into_inner(),
            deployment: default_target,
            default_namespace: keys.namespace.is_none(),
            notify: None,
            keep_last,
            keep_days,
            environments,
            helm,
        })
    }

    /// A site's `name`: a DNS label no other site has (added to `taken`).
    fn site_name(
        &mut self,
        index: usize,
        table: &mut TableReader<'_>,
        taken: &mut Taken,
    ) -> Option<Spanned<String>> {
        let name = table.required_string(self, "name");
        if let Some(name) = &name {
            self.check_name(name, &table.key_path("name"), "site");
            if !taken.names.insert(name.get_ref().clone()) {
                self.report(
                    name.span(),
                    Some(format!("site[{index}].name")),
                    format!("duplicate site name `{}`", name.get_ref()),
                );
            }
        }
        name
    }

    /// A site's `build`: a command, when given.
    fn build_command(&mut self, table: &mut TableReader<'_>) -> Option<Spanned<String>> {
        let build = table.string(self, "build");
        if let Some(build) = &build
            && build.get_ref().trim().is_empty()
        {
            self.report(
                build.span(),
                Some(table.key_path("build")),
                "the build command is empty; leave the key out to ship the folder as it is",
            );
        }
        build
    }

    /// A site's `image`: a repository, whose full reference under the
    /// registry is not too long.
    fn site_image(
        &mut self,
        table: &mut TableReader<'_>,
        context: &SiteContext<'_>,
    ) -> Option<Spanned<String>> {
        let image = table.required_string(self, "image");
        if let Some(image) = &image {
            let full = context
                .registry
                .map(|r| format!("{}/{}", r.address, image.get_ref()));
            if let Err(problem) = reference::check_repository(image.get_ref(), full.as_deref()) {
                self.report(image.span(), Some(table.key_path("image")), problem);
            }
        }
        image
    }

    /// A site's `helm = { chart, registry, repository, tag, digest }` or
    /// `{ chart, reference }`: each values key as `helm --set` takes it; the
    /// keys left out are `helm create`'s (`image.repository`, `image.tag`).
    fn helm(&mut self, mut table: TableReader<'_>) -> HelmValues {
        let chart = table.string(self, "chart");
        if let Some(chart) = &chart
            && (chart.get_ref().is_empty() || chart.get_ref().contains(char::is_whitespace))
        {
            self.report(
                chart.span(),
                Some(table.key_path("chart")),
                "a chart is one word for `helm upgrade` (a path, `repo/name` or `oci://…`)",
            );
        }
        let mut keys = BTreeMap::new();
        for key in ["reference", "registry", "repository", "tag", "digest"] {
            if let Some(value) = table.string(self, key) {
                if let Err(problem) = check_values_key(value.get_ref()) {
                    self.report(value.span(), Some(table.key_path(key)), problem);
                }
                keys.insert(key, value);
            }
        }
        let keys = if let Some(reference) = keys.remove("reference") {
            if let Some((key, value)) = keys.iter().next() {
                self.report(
                    value.span(),
                    Some(table.key_path(key)),
                    "give either `reference` (one value holds the whole image) or the parts (`registry`, `repository`, `tag`, `digest`), not both",
                );
            }
            HelmImageKeys::Reference(reference.into_inner())
        } else {
            let mut part = |key: &str| keys.remove(key).map(Spanned::into_inner);
            HelmImageKeys::Parts {
                registry: part("registry"),
                repository: part("repository").unwrap_or_else(|| HELM_REPOSITORY_KEY.into()),
                tag: part("tag").unwrap_or_else(|| HELM_TAG_KEY.into()),
                digest: part("digest"),
            }
        };
        table.finish(self);
        HelmValues {
            chart: chart.map(Spanned::into_inner),
            keys,
        }
    }

    /// Records the site's Deployment containers in `taken` (per kubeconfig
    /// context), reporting one another site (or environment) already ships to.
    #[expect(clippy::too_many_arguments, reason = "the site's parts, read by its caller")]
    fn take_targets(
        &mut self,
        index: usize,
        name: &str,
        span: &Range<usize>,
        default_target: &DeploymentTarget,
        environments: &[SiteEnvironment],
        context: &SiteContext<'_>,
        taken: &mut Taken,
    ) {
        let targets: Vec<(Option<String>, DeploymentTarget, String)> = if context.environments.is_empty() {
            vec![(None, default_target.clone(), String::new())]
        } else {
            environments
                .iter()
                .map(|there| {
                    let declared = context.environments.iter().find(|e| e.name == there.environment);
                    let context_name = declared.and_then(|e| e.kubernetes.context.clone());
                    (
                        context_name,
                        there.deployment.clone(),
                        format!(" in environment `{}`", there.environment),
                    )
                })
                .collect()
        };
        for (context_name, target, where_) in targets {
            if let Some(other) = taken
                .targets
                .insert((context_name, target.clone()), (index, name.to_string()))
            {
                let (other_index, other) = other;
                let other = if other_index == index {
                    "another environment of this site".to_string()
                } else {
                    format!("site `{other}`")
                };
                self.report(
                    span.clone(),
                    Some(format!("site[{index}].deployment")),
                    format!(
                        "{other} already ships to container `{}` of Deployment {}/{}{where_}",
                        target.container, target.namespace, target.name
                    ),
                );
            }
        }
    }

    /// A site's `environments`: each a declared environment, none twice; all
    /// of them when the key is left out. `None` when something is wrong.
    fn site_environments(
        &mut self,
        table: &mut TableReader<'_>,
        context: &SiteContext<'_>,
    ) -> Option<Vec<String>> {
        let key = table.key_path("environments");
        let Some(listed) = table.string_array(self, "environments") else {
            return Some(context.environments.iter().map(|e| e.name.clone()).collect());
        };
        let mut names: Vec<String> = Vec::new();
        let mut valid = true;
        for name in listed {
            let problem = if context.environments.is_empty() {
                Some("no [[environment]] is declared".to_string())
            } else if !context.environments.iter().any(|e| &e.name == name.get_ref()) {
                Some(format!(
                    "no [[environment]] is named `{}` (known: {})",
                    name.get_ref(),
                    known_list(context.environments.iter().map(|e| e.name.as_str()))
                ))
            } else if names.contains(name.get_ref()) {
                Some(format!("`{}` is listed twice", name.get_ref()))
            } else {
                None
            };
            if let Some(problem) = problem {
                self.report(name.span(), Some(key.clone()), problem);
                valid = false;
            } else {
                names.push(name.into_inner());
            }
        }
        if valid && names.is_empty() {
            self.report(
                table.span.clone(),
                Some(key),
                "the site ships to no environment; list at least one",
            );
            valid = false;
        }
        // In the file's order of environments.
        names.sort_by_key(|name| context.environments.iter().position(|e| &e.name == name));
        valid.then_some(names)
    }

    /// `[site.environment.<name>]`: the site's Deployment and webhook in one
    /// of the environments it ships to.
    fn site_overrides(
        &mut self,
        table: &mut TableReader<'_>,
        listed: Option<&[String]>,
    ) -> Vec<SiteOverride> {
        let mut overrides = Vec::new();
        for (name, mut reader) in table.named_tables(self, "environment") {
            if let Some(listed) = listed
                && !listed.contains(name.get_ref())
            {
                self.report(
                    name.span(),
                    Some(reader.key_path("")).map(|k| k.trim_end_matches('.').to_string()),
                    if listed.is_empty() {
                        "no [[environment]] is declared".to_string()
                    } else {
                        format!(
                            "the site does not ship to `{}` (its environments: {})",
                            name.get_ref(),
                            listed.join(", ")
                        )
                    },
                );
            }
            let deployment = reader
                .table(self, "deployment", false)
                .map(|t| self.deployment(t, false).0)
                .unwrap_or_default();
            let notify = reader.table(self, "notify", false).and_then(|t| self.notify(t));
            reader.finish(self);
            overrides.push(SiteOverride {
                name,
                deployment,
                notify,
            });
        }
        overrides
    }

    /// A site's `repo`, which a `[[repo]]` must name.
    fn site_repo(
        &mut self,
        table: &mut TableReader<'_>,
        context: &SiteContext<'_>,
    ) -> Option<Spanned<String>> {
        let repo = table.required_string(self, "repo");
        if let Some(repo) = &repo
            && !context.repo_names.contains(repo.get_ref())
        {
            let mut known: Vec<_> = context.repos.iter().map(|r| format!("`{}`", r.name)).collect();
            known.dedup();
            self.report(
                repo.span(),
                Some(table.key_path("repo")),
                format!(
                    "no [[repo]] is named `{}` (known: {})",
                    repo.get_ref(),
                    if known.is_empty() {
                        "none".into()
                    } else {
                        known.join(", ")
                    }
                ),
            );
        }
        repo
    }

    /// A path `key` that must stay inside the repo (or the site's folder).
    fn relative_path(&mut self, table: &mut TableReader<'_>, key: &str) -> Option<Spanned<String>> {
        let path = table.string(self, key);
        if let Some(path) = &path
            && let Err(problem) = check_relative_path(path.get_ref())
        {
            self.report(path.span(), Some(table.key_path(key)), problem);
        }
        path
    }

    /// A site's `template` (default `static`) or `dockerfile`, never both.
    fn image_source(&mut self, table: &mut TableReader<'_>, templates_dir: &Path) -> Option<ImageSource> {
        let template = table.string(self, "template");
        let dockerfile = table.string(self, "dockerfile");
        match (template, dockerfile) {
            (Some(template), Some(dockerfile)) => {
                self.report(
                    dockerfile.span(),
                    Some(table.key_path("dockerfile")),
                    "give either `template` or `dockerfile`, not both",
                );
                let _ = template;
                None
            }
            (None, Some(dockerfile)) => match check_relative_path(dockerfile.get_ref()) {
                Ok(()) => Some(ImageSource::Dockerfile(dockerfile.into_inner())),
                Err(problem) => {
                    self.report(dockerfile.span(), Some(table.key_path("dockerfile")), problem);
                    None
                }
            },
            (template, None) => {
                let template =
                    template.unwrap_or_else(|| Spanned::new(table.span.clone(), "static".to_string()));
                let folder = templates_dir.join(template.get_ref());
                if template.get_ref().contains(['/', '\\']) || template.get_ref().starts_with('.') {
                    self.report(
                        template.span(),
                        Some(table.key_path("template")),
                        format!(
                            "`{}` is not a template name (a folder name under {})",
                            template.get_ref(),
                            templates_dir.display()
                        ),
                    );
                    None
                } else if !folder.join("Dockerfile").is_file() {
                    let known = list_templates(templates_dir);
                    self.report(
                        template.span(),
                        Some(table.key_path("template")),
                        format!(
                            "no template `{}`: {} does not exist (known: {})",
                            template.get_ref(),
                            folder.join("Dockerfile").display(),
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    None
                } else {
                    Some(ImageSource::Template(template.into_inner()))
                }
            }
        }
    }

    /// A `deployment = { namespace, name, container }` as written, and its
    /// span; `name` and `container` must be there when `required`.
    fn deployment(
        &mut self,
        mut deployment: TableReader<'_>,
        required: bool,
    ) -> (DeploymentKeys, Range<usize>) {
        let namespace = deployment.string(self, "namespace");
        let (name, container) = if required {
            (
                deployment.required_string(self, "name"),
                deployment.required_string(self, "container"),
            )
        } else {
            (
                deployment.string(self, "name"),
                deployment.string(self, "container"),
            )
        };
        let mut keys = DeploymentKeys::default();
        for (key, value, slot) in [
            ("namespace", namespace, &mut keys.namespace),
            ("name", name, &mut keys.name),
            ("container", container, &mut keys.container),
        ] {
            if let Some(value) = value {
                let check = if key == "name" {
                    reference::check_dns_subdomain(value.get_ref())
                } else {
                    reference::check_dns_label(value.get_ref())
                };
                match check {
                    Ok(()) => *slot = Some(value.into_inner()),
                    Err(problem) => self.report(value.span(), Some(deployment.key_path(key)), problem),
                }
            }
        }
        let span = deployment.span.clone();
        deployment.finish(self);
        (keys, span)
    }
}

/// A values key that `helm --set` does not take.
#[derive(Debug, thiserror::Error)]
#[error(
    "`{key}` is not a values key as `helm --set` takes it: names of letters, digits, `_` and `-` joined by `.` (`image.tag`, `containers[0].image`)"
)]
pub struct ValuesKeyProblem {
    key: String,
}

/// A values key as `helm --set` takes it: names (letters, digits, `_`,
/// `-`) joined by `.`, each with list indexes if any (`containers[0]`).
fn check_values_key(key: &str) -> Result<(), ValuesKeyProblem> {
    let name_ok = |segment: &str| {
        let (name, indexes) = segment
            .split_once('[')
            .map_or((segment, ""), |(n, rest)| (n, rest));
        let indexes_ok = indexes.is_empty()
            || indexes.strip_suffix(']').is_some_and(|inner| {
                inner
                    .split("][")
                    .all(|index| !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()))
            });
        !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            && indexes_ok
    };
    if key.split('.').all(name_ok) {
        Ok(())
    } else {
        Err(ValuesKeyProblem { key: key.to_string() })
    }
}

/// The Deployment a site names by default: its `deployment`'s keys, the
/// namespace the file's (or the environment's) when left out; `None` when
/// its name or container is missing or wrong (reported).
fn default_target(keys: &DeploymentKeys, context: &SiteContext<'_>) -> Option<DeploymentTarget> {
    Some(DeploymentTarget {
        namespace: keys
            .namespace
            .clone()
            .unwrap_or_else(|| context.default_namespace.to_string()),
        name: keys.name.clone()?,
        container: keys.container.clone()?,
    })
}

/// A site's Deployment in each environment it ships to: the keys of its
/// `[site.environment.<name>] deployment`, else its `deployment`'s, else the
/// environment's namespace.
fn resolve_environments(
    listed: &[String],
    overrides: &[SiteOverride],
    keys: &DeploymentKeys,
    default_target: &DeploymentTarget,
    context: &SiteContext<'_>,
) -> Vec<SiteEnvironment> {
    listed
        .iter()
        .filter_map(|environment| {
            let declared = context.environments.iter().find(|e| &e.name == environment)?;
            let override_ = overrides.iter().find(|o| o.name.get_ref() == environment);
            let written = override_.map(|o| &o.deployment);
            let pick = |key: fn(&DeploymentKeys) -> &Option<String>| written.and_then(|w| key(w).clone());
            let namespace = pick(|k| &k.namespace).or_else(|| keys.namespace.clone());
            Some(SiteEnvironment {
                environment: environment.clone(),
                default_namespace: namespace.is_none(),
                deployment: DeploymentTarget {
                    namespace: namespace.unwrap_or_else(|| declared.kubernetes.namespace.clone()),
                    name: pick(|k| &k.name).unwrap_or_else(|| default_target.name.clone()),
                    container: pick(|k| &k.container).unwrap_or_else(|| default_target.container.clone()),
                },
                notify: override_.and_then(|o| o.notify.clone()),
            })
        })
        .collect()
}

fn list_templates(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().join("Dockerfile").is_file())
        .map(|entry| format!("`{}`", entry.file_name().to_string_lossy()))
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_keys_are_what_helm_set_takes() {
        for key in [
            "image.tag",
            "image",
            "web-app.image_tag",
            "containers[0].image",
            "a[1][2].b",
        ] {
            assert!(check_values_key(key).is_ok(), "{key}");
        }
        for key in [
            "",
            "image.",
            ".tag",
            "image..tag",
            "image tag",
            "a[x]",
            "a[]",
            "a[0",
            "image=tag",
        ] {
            assert!(check_values_key(key).is_err(), "{key}");
        }
    }
}
