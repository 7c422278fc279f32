//! Mailbox providers: which recipient domains share one provider's limits.

use crate::resolver::{Answer, LookupError, Resolver, Rtype, normalize};
use rundbrief_core::config::{BUILTIN_PROVIDERS, ShapingConfig};
use std::collections::HashMap;
use std::sync::Arc;

/// `[shaping.providers.NAME]` limits of a group; `None` falls back to the
/// `[sending]` per-domain limits, applied to the group as a whole.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProviderLimits {
    /// Connections open at once to the provider.
    pub connections: Option<usize>,
    /// Messages over one connection before it is closed.
    pub messages_per_connection: Option<u32>,
    /// Messages per second to the provider.
    pub rate_per_second: Option<u32>,
    /// Messages per hour to the provider.
    pub rate_per_hour: Option<u32>,
}

/// One provider group: its name, how domains are matched to it, its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderGroup {
    /// `google`, `microsoft`, … or a name from `[shaping.providers]`.
    pub name: Arc<str>,
    /// Domains known without DNS (`gmail.com`, `hotmail.*`).
    pub domains: Vec<String>,
    /// MX host suffixes (`google.com`).
    pub mx_suffixes: Vec<String>,
    /// Its limits.
    pub limits: ProviderLimits,
}

/// How a domain's provider was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Basis {
    /// The domain is one of the group's well-known domains (no DNS asked).
    Domain,
    /// The domain's MX host `host` is under one of the group's suffixes.
    Mx {
        /// The MX host that matched (the most preferred one that did).
        host: String,
    },
    /// No group matched: the domain is a provider of its own.
    Own,
    /// The MX lookup failed (SERVFAIL, timeout): the domain stands for
    /// itself for now; ask again later, the answer may change.
    Unresolved {
        /// Why the lookup failed.
        reason: String,
    },
}

/// The provider of a recipient domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The group's name, or the domain itself when no group matched.
    pub name: Arc<str>,
    /// How it was found.
    pub basis: Basis,
}

impl Provider {
    /// True when the domain belongs to a provider group (not to itself).
    pub fn is_group(&self) -> bool {
        matches!(self.basis, Basis::Domain | Basis::Mx { .. })
    }
}

/// The provider groups in effect: the built-in ones (unless
/// `builtin_providers = false`) extended and overridden by
/// `[shaping.providers]`. Pure data; matching needs no DNS.
#[derive(Debug, Clone, Default)]
pub struct ProviderTable {
    groups: Vec<ProviderGroup>,
    /// Exact domain → group index.
    exact: HashMap<String, usize>,
    /// Name before a `.*` (`hotmail`) → group index.
    wild: HashMap<String, usize>,
    /// (MX suffix, group index), longest suffix first.
    suffixes: Vec<(String, usize)>,
}

impl ProviderTable {
    /// The table for `[shaping]`. Give it a validated configuration
    /// (`Config::validate`); entries that are not lower-case names never
    /// match anything.
    pub fn from_config(cfg: &ShapingConfig) -> Self {
        let mut groups: Vec<ProviderGroup> = Vec::new();
        if cfg.builtin_providers {
            for b in BUILTIN_PROVIDERS {
                groups.push(ProviderGroup {
                    name: Arc::from(b.name),
                    domains: b.domains.iter().map(|s| s.to_string()).collect(),
                    mx_suffixes: b.mx_suffixes.iter().map(|s| s.to_string()).collect(),
                    limits: ProviderLimits::default(),
                });
            }
        }
        for (name, p) in &cfg.providers {
            let limits = ProviderLimits {
                connections: p.connections,
                messages_per_connection: p.messages_per_connection,
                rate_per_second: p.rate_per_second,
                rate_per_hour: p.rate_per_hour,
            };
            match groups.iter_mut().find(|g| &*g.name == name.as_str()) {
                Some(g) => {
                    g.domains.extend(p.domains.iter().cloned());
                    g.mx_suffixes.extend(p.mx_suffixes.iter().cloned());
                    g.limits = limits;
                }
                None => groups.push(ProviderGroup {
                    name: Arc::from(name.as_str()),
                    domains: p.domains.clone(),
                    mx_suffixes: p.mx_suffixes.clone(),
                    limits,
                }),
            }
        }
        let mut t = ProviderTable {
            groups,
            ..Default::default()
        };
        // Configured groups come after the built-ins: a domain a configured
        // group names explicitly is taken from the built-in group.
        for (i, g) in t.groups.iter().enumerate() {
            for d in &g.domains {
                let d = d.to_ascii_lowercase();
                match d.strip_suffix(".*") {
                    Some(stem) => t.wild.insert(stem.to_string(), i),
                    None => t.exact.insert(d, i),
                };
            }
            for s in &g.mx_suffixes {
                t.suffixes.push((s.to_ascii_lowercase(), i));
            }
        }
        // Most specific suffix first; among equals, the later (configured) group.
        t.suffixes
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(b.1.cmp(&a.1)));
        t
    }

    /// The built-in groups alone.
    pub fn builtin() -> Self {
        Self::from_config(&ShapingConfig::default())
    }

    /// Every group, built-in ones first.
    pub fn groups(&self) -> &[ProviderGroup] {
        &self.groups
    }

    /// The group called `name`.
    pub fn group(&self, name: &str) -> Option<&ProviderGroup> {
        self.groups.iter().find(|g| &*g.name == name)
    }

    /// The group that names `domain` among its well-known domains. `NAME.*`
    /// matches `NAME.` followed by one label (`hotmail.de`) or by two where
    /// the first has at most three letters (`hotmail.co.uk`, `yahoo.com.br`).
    pub fn by_domain(&self, domain: &str) -> Option<&ProviderGroup> {
        let d = normalize(domain);
        if let Some(&i) = self.exact.get(&d) {
            return Some(&self.groups[i]);
        }
        let labels: Vec<&str> = d.split('.').collect();
        let n = labels.len();
        let mut stems = Vec::with_capacity(2);
        if n >= 3 && labels[n - 2].len() <= 3 {
            stems.push(labels[..n - 2].join("."));
        }
        if n >= 2 {
            stems.push(labels[..n - 1].join("."));
        }
        stems
            .iter()
            .find_map(|s| self.wild.get(s.as_str()))
            .map(|&i| &self.groups[i])
    }

    /// The group of the first of `hosts` (most preferred first) that is one
    /// of a group's MX suffixes or under one, and that host.
    pub fn by_mx<'h>(
        &self,
        hosts: impl IntoIterator<Item = &'h str>,
    ) -> Option<(&ProviderGroup, &'h str)> {
        for h in hosts {
            let host = h.trim_end_matches('.');
            for (suffix, i) in &self.suffixes {
                let under = host.len() > suffix.len()
                    && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix)
                    && host.as_bytes()[host.len() - suffix.len() - 1] == b'.';
                if under || host.eq_ignore_ascii_case(suffix) {
                    return Some((&self.groups[*i], h));
                }
            }
        }
        None
    }
}

/// Finds the provider of recipient domains: by name first, then by the MX
/// hosts the domain resolves to (through the [`Resolver`]'s cache). Cheap
/// to clone.
#[derive(Debug, Clone)]
pub struct Providers {
    table: Arc<ProviderTable>,
    resolver: Resolver,
}

impl Providers {
    /// The groups of `[shaping]`, resolving MX hosts with `resolver`.
    pub fn new(cfg: &ShapingConfig, resolver: Resolver) -> Self {
        Providers {
            table: Arc::new(ProviderTable::from_config(cfg)),
            resolver,
        }
    }

    /// The table in use.
    pub fn table(&self) -> &ProviderTable {
        &self.table
    }

    /// The provider of `domain` when it is one of a group's well-known
    /// domains; no DNS.
    pub fn known(&self, domain: &str) -> Option<Provider> {
        self.table.by_domain(domain).map(|g| Provider {
            name: g.name.clone(),
            basis: Basis::Domain,
        })
    }

    /// The provider of `domain`: a well-known domain's group, else the group
    /// whose MX suffix matches the domain's most preferred matching MX host,
    /// else the domain itself.
    pub async fn provider_of(&self, domain: &str) -> Provider {
        if let Some(p) = self.known(domain) {
            return p;
        }
        let d = normalize(domain);
        let mx = self.resolver.mx(&d).await;
        self.by_mx_answer(d, mx)
    }

    /// [`Providers::provider_of`] from the cache alone, for hot paths:
    /// `None` when the domain is not well known and its MX answer is not
    /// cached (then ask `provider_of`). Never waits.
    pub fn cached_provider_of(&self, domain: &str) -> Option<Provider> {
        if let Some(p) = self.known(domain) {
            return Some(p);
        }
        let d = normalize(domain);
        let mx = self.resolver.cached(&d, Rtype::Mx)?;
        Some(self.by_mx_answer(d, mx))
    }

    fn by_mx_answer(&self, d: String, mx: Result<Answer, LookupError>) -> Provider {
        let own = |basis| Provider {
            name: Arc::from(d.as_str()),
            basis,
        };
        match mx {
            Ok(Answer::Mx(records)) => {
                match self
                    .table
                    .by_mx(records.iter().map(|m| m.exchange.as_str()))
                {
                    Some((g, host)) => Provider {
                        name: g.name.clone(),
                        basis: Basis::Mx {
                            host: host.to_string(),
                        },
                    },
                    None => own(Basis::Own),
                }
            }
            Ok(_) => own(Basis::Own),
            Err(e) => own(Basis::Unresolved {
                reason: e.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rundbrief_core::config::ProviderConfig;

    #[test]
    fn builtin_domains_match_without_dns() {
        let t = ProviderTable::builtin();
        for (domain, want) in [
            ("gmail.com", Some("google")),
            ("GoogleMail.com.", Some("google")),
            ("hotmail.com", Some("microsoft")),
            ("hotmail.co.uk", Some("microsoft")),
            ("hotmail.de", Some("microsoft")),
            ("outlook.com", Some("microsoft")),
            ("live.com", Some("microsoft")),
            ("msn.com", Some("microsoft")),
            ("yahoo.com.br", Some("yahoo")),
            ("yahoo.fr", Some("yahoo")),
            ("aol.com", Some("yahoo")),
            ("ymail.com", Some("yahoo")),
            ("icloud.com", Some("apple")),
            ("me.com", Some("apple")),
            ("mac.com", Some("apple")),
            ("gmx.de", Some("gmx")),
            ("web.de", Some("gmx")),
            // not a provider by name
            ("yahoo.example.org", None),
            ("mail.gmail.com", None),
            ("example.org", None),
            ("hotmail", None),
        ] {
            assert_eq!(t.by_domain(domain).map(|g| &*g.name), want, "{domain}");
        }
    }

    #[test]
    fn mx_suffixes_match_whole_labels_most_preferred_first() {
        let t = ProviderTable::builtin();
        let name = |hosts: &[&str]| {
            t.by_mx(hosts.iter().copied())
                .map(|(g, h)| (g.name.to_string(), h.to_string()))
        };
        assert_eq!(
            name(&["aspmx.l.google.com"]),
            Some(("google".into(), "aspmx.l.google.com".into()))
        );
        assert_eq!(
            name(&["example-org.mail.protection.outlook.com"])
                .unwrap()
                .0,
            "microsoft"
        );
        assert_eq!(name(&["mta7.am0.yahoodns.net"]).unwrap().0, "yahoo");
        assert_eq!(name(&["mx01.mail.icloud.com"]).unwrap().0, "apple");
        assert_eq!(name(&["mx00.gmx.net"]).unwrap().0, "gmx");
        assert_eq!(
            name(&["mx.notgoogle.com"]),
            None,
            "a suffix matches whole labels"
        );
        assert_eq!(name(&["mx.example.org"]), None);
        assert_eq!(
            name(&["mx.example.org", "alt1.aspmx.l.google.com"]),
            Some(("google".into(), "alt1.aspmx.l.google.com".into()))
        );
    }

    #[test]
    fn config_extends_builtins_and_adds_groups() {
        let mut cfg = ShapingConfig::default();
        cfg.providers.insert(
            "google".into(),
            ProviderConfig {
                domains: vec!["corp-gmail.example".into()],
                rate_per_second: Some(10),
                ..Default::default()
            },
        );
        cfg.providers.insert(
            "hoster".into(),
            ProviderConfig {
                domains: vec!["hoster.*".into()],
                mx_suffixes: vec!["mx.hoster.example".into(), "google.com".into()],
                connections: Some(2),
                ..Default::default()
            },
        );
        let t = ProviderTable::from_config(&cfg);
        let g = t.group("google").unwrap();
        assert_eq!(g.limits.rate_per_second, Some(10));
        assert!(
            g.domains.iter().any(|d| d == "gmail.com"),
            "built-in domains kept"
        );
        assert_eq!(&*t.by_domain("corp-gmail.example").unwrap().name, "google");
        assert_eq!(&*t.by_domain("hoster.nl").unwrap().name, "hoster");
        assert_eq!(&*t.by_mx(["a.mx.hoster.example"]).unwrap().0.name, "hoster");
        // The same suffix in a configured group wins over the built-in one.
        assert_eq!(&*t.by_mx(["aspmx.l.google.com"]).unwrap().0.name, "hoster");
        assert_eq!(t.group("hoster").unwrap().limits.connections, Some(2));

        let only = ShapingConfig {
            builtin_providers: false,
            ..cfg
        };
        let t = ProviderTable::from_config(&only);
        assert!(t.by_domain("gmail.com").is_none(), "built-ins off");
        assert_eq!(&*t.by_domain("corp-gmail.example").unwrap().name, "google");
    }
}
