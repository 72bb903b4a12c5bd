//! `[[environment]]`, the cluster keys it shares with `[kubernetes]`,
//! `default_environment`, and `[notify]`: each environment's cluster,
//! registry and webhook.

use std::collections::HashSet;

use toml::Spanned;

use crate::config::table::TableReader;
use crate::config::validate::{Checker, check_env_name, known_list};
use crate::config::{CredentialSource, Environment, Kubernetes, Notify, NotifyOn, Registry, Retention};
use crate::reference;

impl Checker<'_> {
    /// Every `[[environment]]`, each with whether it names its own registry.
    pub(super) fn environments(
        &mut self,
        top: &mut TableReader<'_>,
        registry: Option<&Registry>,
        kubernetes: &Kubernetes,
        notify: Option<&Notify>,
    ) -> Vec<(Environment, bool)> {
        let mut names = HashSet::new();
        let mut promote_sources = Vec::new();
        let mut environments = Vec::new();
        for (index, mut table) in top.array_of_tables(self, "environment").into_iter().enumerate() {
            let name = table.required_string(self, "name");
            if let Some(name) = &name {
                self.check_name(name, &table.key_path("name"), "environment");
                if !names.insert(name.get_ref().clone()) {
                    self.report(
                        name.span(),
                        Some(format!("environment[{index}].name")),
                        format!("duplicate environment name `{}`", name.get_ref()),
                    );
                }
            }
            let cluster = self.cluster(&mut table, kubernetes);
            let own_registry = table.table(self, "registry", false);
            let has_registry = own_registry.is_some();
            let own_registry = own_registry.and_then(|t| self.registry(t));
            let own_notify = table.table(self, "notify", false).and_then(|t| self.notify(t));
            let promote_from = table.string(self, "promote_from");
            table.finish(self);
            let Some(name) = name else { continue };
            if let Some(source) = &promote_from {
                promote_sources.push((index, name.get_ref().clone(), source.clone()));
            }
            let Some(registry) = own_registry.or_else(|| registry.cloned()).or_else(|| {
                // Reported once, with [registry].
                (!has_registry).then(|| Registry {
                    address: String::new(),
                    credentials: CredentialSource::None,
                    keep: Retention::default(),
                })
            }) else {
                continue;
            };
            environments.push((
                Environment {
                    name: name.into_inner(),
                    kubernetes: cluster,
                    registry,
                    notify: own_notify.or_else(|| notify.cloned()),
                    promote_from: promote_from.map(Spanned::into_inner),
                },
                has_registry,
            ));
        }
        for (index, name, source) in promote_sources {
            let key = Some(format!("environment[{index}].promote_from"));
            if source.get_ref() == &name {
                self.report(
                    source.span(),
                    key,
                    "an environment cannot be promoted from itself",
                );
            } else if !names.contains(source.get_ref()) {
                self.report(
                    source.span(),
                    key,
                    format!(
                        "no [[environment]] is named `{}` (known: {})",
                        source.get_ref(),
                        known_list(names.iter().map(String::as_str))
                    ),
                );
            }
        }
        environments
    }

    /// The environments; `[registry]` is missing unless each names its own.
    pub(super) fn registry_for_all(
        &mut self,
        registry_present: bool,
        at: usize,
        environments: Vec<(Environment, bool)>,
    ) -> Vec<Environment> {
        if !registry_present
            && (environments.is_empty() || environments.iter().any(|(_, has_registry)| !has_registry))
        {
            self.report(
                at..at,
                Some("registry".into()),
                if environments.is_empty() {
                    "missing table [registry]"
                } else {
                    "missing table [registry] (an [[environment]] without its own `registry` uses it)"
                },
            );
        }
        environments
            .into_iter()
            .map(|(environment, _)| environment)
            .collect()
    }

    /// `default_environment`: one of the environments (the first without it).
    pub(super) fn default_environment(
        &mut self,
        top: &mut TableReader<'_>,
        environments: &[Environment],
    ) -> Option<String> {
        let named = top.string(self, "default_environment");
        match named {
            None => environments.first().map(|e| e.name.clone()),
            Some(named) if environments.iter().any(|e| &e.name == named.get_ref()) => {
                Some(named.into_inner())
            }
            Some(named) => {
                let message = if environments.is_empty() {
                    "no [[environment]] is declared".to_string()
                } else {
                    format!(
                        "no [[environment]] is named `{}` (known: {})",
                        named.get_ref(),
                        known_list(environments.iter().map(|e| e.name.as_str()))
                    )
                };
                self.report(named.span(), Some("default_environment".into()), message);
                None
            }
        }
    }

    /// The cluster keys of `[kubernetes]` or an `[[environment]]`
    /// (`context`, `namespace`, `rollout_timeout`), each left out taken from
    /// `defaults`.
    pub(super) fn cluster(&mut self, table: &mut TableReader<'_>, defaults: &Kubernetes) -> Kubernetes {
        let context = table.string(self, "context").map(Spanned::into_inner);
        let namespace = table.string(self, "namespace");
        if let Some(namespace) = &namespace
            && let Err(problem) = reference::check_dns_label(namespace.get_ref())
        {
            self.report(namespace.span(), Some(table.key_path("namespace")), problem);
        }
        let rollout_timeout = table.duration(self, "rollout_timeout");
        Kubernetes {
            context: context.or_else(|| defaults.context.clone()),
            namespace: namespace.map_or_else(|| defaults.namespace.clone(), Spanned::into_inner),
            rollout_timeout: rollout_timeout.unwrap_or(defaults.rollout_timeout),
            kubeconfig: None,
        }
    }

    /// `[notify]`.
    pub(super) fn notify(&mut self, mut table: TableReader<'_>) -> Option<Notify> {
        let webhook_env = table.required_string(self, "webhook_env");
        if let Some(env) = &webhook_env {
            check_env_name(self, env, &table.key_path("webhook_env"));
        }
        let on = match table.string(self, "on") {
            None => Some(NotifyOn::Failure),
            Some(on) => match on.get_ref().as_str() {
                "failure" => Some(NotifyOn::Failure),
                "success" => Some(NotifyOn::Success),
                "always" => Some(NotifyOn::Always),
                other => {
                    self.report(
                        on.span(),
                        Some(table.key_path("on")),
                        format!("`{other}` is not one of \"failure\", \"success\", \"always\""),
                    );
                    None
                }
            },
        };
        table.finish(self);
        Some(Notify {
            webhook_env: webhook_env?.into_inner(),
            on: on?,
        })
    }
}
