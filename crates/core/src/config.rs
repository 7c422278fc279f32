//! Configuration types, their defaults and their validation.
//!
//! The layering itself (defaults → `rundbrief.toml` → `DATABASE_URL` →
//! `RUNDBRIEF_*` variables → command-line flags) happens in the `cli` crate,
//! which reads files and the environment once and hands the result here.
//! Every key is documented where it is declared; `rundbrief init` writes the
//! same documentation into a commented example file ([`example_toml`]).

use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

/// Shortest secret we accept, in characters.
pub const MIN_SECRET_LEN: usize = 32;

/// A configuration value that is wrong, named by key.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A command needs the signing secret and none is configured.
    #[error(
        "no secret is configured: it signs VERP return paths and unsubscribe links. \
         Run `rundbrief init` to write rundbrief.toml with a freshly generated one, \
         or set RUNDBRIEF_SECRET (at least {MIN_SECRET_LEN} characters)"
    )]
    MissingSecret,
    /// A command needs a key that is not set.
    #[error("`{key}` is not set: {why}")]
    Missing {
        key: &'static str,
        why: &'static str,
    },
    /// A key has a value outside its allowed range.
    #[error("`{key}` {problem}")]
    Invalid { key: &'static str, problem: String },
}

/// A secret string (HMAC key). Its `Debug` and `Serialize` never show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret taken from configuration.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// 32 random bytes from the operating system, as 64 hex digits.
    ///
    /// # Panics
    /// If the operating system has no random source, which would make any
    /// secret we could produce unsafe.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)
            .expect("the operating system must provide random bytes for a secret");
        Secret(data_encoding::HEXLOWER.encode(&bytes))
    }

    /// The key bytes for HMAC.
    pub fn expose(&self) -> &[u8] {
        self.0.as_bytes()
    }

    fn check(&self, key: &'static str) -> Result<(), ConfigError> {
        let len = self.0.chars().count();
        if len < MIN_SECRET_LEN {
            return Err(ConfigError::Invalid {
                key,
                problem: format!(
                    "is too short ({len} characters, at least {MIN_SECRET_LEN} needed); \
                     `rundbrief init --print-secret` prints a good one"
                ),
            });
        }
        Ok(())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// The whole configuration. Every field has a default, so an empty file (or
/// none) is a working configuration for local use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Signs VERP return paths and unsubscribe links (HMAC-SHA256). Required by
    /// the commands that sign or verify; `rundbrief init` generates one.
    /// Env: `RUNDBRIEF_SECRET`.
    pub secret: Option<Secret>,
    /// The secret before the last rotation: tokens signed with it still verify,
    /// so bounces to mail sent before a rotation are not lost.
    /// Env: `RUNDBRIEF_PREVIOUS_SECRET`.
    pub previous_secret: Option<Secret>,
    /// The default relay, as a URL in lettre's format: `smtp://host:2525`,
    /// `smtp://host:587?tls=required` (STARTTLS), `smtps://host:465`.
    /// Env: `RUNDBRIEF_RELAY`; `--relay` on a command wins. May also name
    /// one of `[relays.NAME]` (a name is looked up first, then a URL). A
    /// URL cannot carry a password, so one naming an AUTH user is refused:
    /// a relay with AUTH is a `[relays.NAME]`. Several relays, sent through
    /// by weight with quotas and failover: a list (`relay = ["ses",
    /// "mailgun"]`), kept here as the names joined by commas (`ses,mailgun`,
    /// which is also what `RUNDBRIEF_RELAY` and `--relay` take).
    #[serde(deserialize_with = "relay_names")]
    pub relay: Option<String>,
    /// Named relays, for AUTH, TLS and pool settings a bare URL cannot
    /// carry: `[relays.NAME]`. `--relay NAME`, a campaign's relay or
    /// `relay = "NAME"` pick one. Env: `RUNDBRIEF_RELAYS__NAME__URL`, …
    pub relays: std::collections::BTreeMap<String, RelayConfig>,
    /// Where subscribers, lists and everything else are stored.
    pub database: DatabaseConfig,
    /// `rundbrief import` tuning.
    pub import: ImportConfig,
    /// Addresses and URLs that go into every campaign.
    pub sending: SendingConfig,
    /// Where operator layouts live.
    pub templates: TemplatesConfig,
    /// How bounces turn into pruning.
    pub bounce: BounceConfig,
    /// The public HTTP endpoint (unsubscribe pages, double opt-in).
    pub http: HttpConfig,
    /// DKIM signing of outgoing mail. Unset: mail goes out unsigned (and
    /// `campaign send` warns).
    pub dkim: DkimConfig,
    /// Lookups of recipient domains (MX, A, AAAA): the resolver, its cache
    /// and how many lookups run at once.
    pub dns: DnsConfig,
    /// Mailbox providers: which recipient domains share one provider's
    /// limits, and those limits.
    pub shaping: ShapingConfig,
    /// The reputation circuit breaker: when a provider (or every provider)
    /// refuses too much of a campaign, stop sending to it.
    pub breaker: BreakerConfig,
}

/// `[breaker]`: the reputation circuit breaker. Each running campaign keeps
/// a rolling window of its latest outcomes per provider group; when the
/// share of blocks (block-class refusals while sending) in a provider's
/// window exceeds `block_ratio`, that provider is suspended for the
/// campaign (its deliveries wait, the others go on). When blocks exceed
/// `block_ratio` in the window over all providers and no single provider
/// holds most of them, or complaints exceed `complaint_ratio` of the
/// campaign's sent mail, the whole campaign is paused. `campaign resume`
/// lifts either.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Outcomes kept per provider (and over all providers). Default 500.
    pub window: usize,
    /// Share of blocks in a window above which the provider is suspended
    /// (or, over all providers, the campaign paused). Default 0.05 (5 %).
    pub block_ratio: f64,
    /// Share of complaints (ARF reports) of the campaign's sent messages
    /// above which the campaign is paused. Default 0.003 (0.3 %).
    pub complaint_ratio: f64,
    /// Outcomes (or sent messages, for complaints) a window needs before a
    /// ratio counts. Default 100.
    pub min_sample: usize,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            window: 500,
            block_ratio: 0.05,
            complaint_ratio: 0.003,
            min_sample: 100,
        }
    }
}

/// `[relays.NAME]`: one relay with everything a URL cannot carry. Unset
/// options keep the sender's defaults (given with each option). The
/// password is never in the URL and never in this file: `password_env` or
/// `password_file` names where it is read, once, when the relay is used.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// The relay as a URL in lettre's format, without password:
    /// `smtp://host:2525`, `smtp://user@host:587?tls=required` (STARTTLS;
    /// the user is the AUTH user), `smtps://host:465`. Required.
    pub url: String,
    /// Environment variable holding the AUTH password (PLAIN or LOGIN,
    /// whichever the relay offers, PLAIN first). Needs a user in `url`.
    /// Variables named `RUNDBRIEF_*_PASSWORD` are never read as
    /// configuration keys, so `RUNDBRIEF_RELAY_PASSWORD` is a fine name.
    pub password_env: Option<String>,
    /// File holding the AUTH password (one trailing newline is dropped);
    /// keep it readable by rundbrief's user only. Not together with
    /// `password_env`.
    pub password_file: Option<std::path::PathBuf>,
    /// How the connection is secured, when the URL does not say it
    /// (`?tls=` or `smtps://`): `none`, `starttls` (required: refuse to send
    /// if not offered), `starttls-opportunistic` or `tls` (implicit, 465).
    /// Without a port in the URL it also picks the port (25, 587, 587, 465).
    /// Default: what the URL says, else `none`.
    pub tls: Option<RelayTls>,
    /// Connections kept open to the relay. Default 4. `campaign send
    /// --pool` and `serve --pool` set it for their campaigns.
    pub pool_size: Option<usize>,
    /// Seconds for DNS plus the TCP connection. Default 30; on expiry the
    /// send is deferred.
    pub connect_timeout_secs: Option<u64>,
    /// Seconds to wait for the reply to each command. Default 60; on expiry
    /// the send is deferred and the connection dropped.
    pub command_timeout_secs: Option<u64>,
    /// Seconds to send the message body and get the reply to the final dot.
    /// Default 600.
    pub data_timeout_secs: Option<u64>,
    /// Messages over one connection before it is closed and a new one
    /// opened. Default 100.
    pub max_messages_per_connection: Option<u32>,
    /// The name sent in EHLO. Default: the URL's path
    /// (`smtp://host/ehlo.example`), else this machine's host name.
    pub ehlo_name: Option<String>,
    /// Messages handed to this relay per UTC hour, over every campaign and
    /// worker on the database (Amazon SES, Mailgun and Google Workspace
    /// limit senders so). At the quota the relay takes nothing more until
    /// the next hour; when every relay of a campaign is at its quota the
    /// campaign waits. Default: no limit.
    pub max_per_hour: Option<u64>,
    /// Messages handed to this relay per UTC day, as `max_per_hour`.
    /// Default: no limit.
    pub max_per_day: Option<u64>,
    /// This relay's share when a campaign sends through several relays:
    /// `weight = 3` beside a relay of weight 1 gets three messages of four.
    /// `weight = 0` makes it a standby: it takes mail only while every
    /// weighted relay of the campaign is at its quota or rested.
    /// Default 1.
    pub weight: Option<u32>,
    /// Failures in a row at CONNECT, TLS or AUTH (the relay unreachable or
    /// refusing us) after which the relay is rested for `rest_for_secs`
    /// and the other relays take its share. Default 3.
    pub rest_after_failures: Option<u32>,
    /// How long a failing relay is rested, in seconds. Default 300.
    pub rest_for_secs: Option<u64>,
}

impl RelayConfig {
    /// `weight`, default 1.
    pub fn weight(&self) -> u32 {
        self.weight.unwrap_or(1)
    }
    /// `rest_after_failures`, default 3.
    pub fn rest_after_failures(&self) -> u32 {
        self.rest_after_failures.unwrap_or(3)
    }
    /// `rest_for_secs`, default 300 (5 minutes).
    pub fn rest_for(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.rest_for_secs.unwrap_or(300))
    }
    /// True when the relay has an hourly or daily quota.
    pub fn has_quota(&self) -> bool {
        self.max_per_hour.is_some() || self.max_per_day.is_some()
    }
}

/// The names (or URLs) in a relay list as `relay`, `--relay` and a
/// campaign's relay hold it: `ses,mailgun` (commas, blanks around them
/// ignored). One element for a single relay.
pub fn relay_list(given: &str) -> Vec<&str> {
    given
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// `relay` as a string (`"ses"`, `"ses,mailgun"`) or a list of them.
fn relay_names<'de, D>(d: D) -> Result<Option<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match Option::<OneOrMany>::deserialize(d)? {
        None => None,
        Some(OneOrMany::One(s)) => Some(s),
        Some(OneOrMany::Many(v)) => {
            if let Some(bad) = v.iter().find(|s| s.contains(',') || s.trim().is_empty()) {
                return Err(serde::de::Error::custom(format!(
                    "`relay`: `{bad}` is not a relay name or URL (each element names one relay)"
                )));
            }
            (!v.is_empty()).then(|| v.join(","))
        }
    })
}

/// `tls` of a `[relays.NAME]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayTls {
    /// Plain text (loopback relays, tests).
    None,
    /// STARTTLS, required.
    Starttls,
    /// STARTTLS when offered, plain text otherwise.
    StarttlsOpportunistic,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `[dkim]`: the keys that sign every outgoing message (RFC 6376). The
/// single-key form is `key_file`, `selector` and `domain` (all three switch
/// signing on); more keys go in `[[dkim.keys]]` tables, each with the same
/// three settings. Every message is signed with every key, so an RSA key and
/// an Ed25519 key together give a signature every receiver can check (RSA)
/// and one for those that prefer Ed25519 (RFC 8463 recommends both).
/// `rundbrief dns records` prints the TXT record of each. Env (single form
/// only): `RUNDBRIEF_DKIM__KEY_FILE`, `RUNDBRIEF_DKIM__SELECTOR`,
/// `RUNDBRIEF_DKIM__DOMAIN`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DkimConfig {
    /// PEM private key: RSA (PKCS#1 `BEGIN RSA PRIVATE KEY` or PKCS#8
    /// `BEGIN PRIVATE KEY`, 2048 bits recommended) or Ed25519 (PKCS#8). The
    /// algorithm follows from the key. `rundbrief dkim keygen` writes one.
    /// Read once at start-up; a relative path is relative to the working
    /// directory. Default: none (no signing).
    pub key_file: Option<std::path::PathBuf>,
    /// The selector: the public key is published at
    /// `<selector>._domainkey.<domain>`. A new selector per key makes rotation
    /// safe (publish the new record, switch, retire the old one later).
    pub selector: Option<String>,
    /// The signing domain (`d=`). For DMARC it must be the domain of `From:`
    /// or a parent of it (relaxed alignment), e.g. `example.org` for
    /// `news@example.org` or `news@mail.example.org`.
    pub domain: Option<String>,
    /// Further keys, `[[dkim.keys]]`: each signs every message too, after
    /// the single-form key (if any). Default: none.
    pub keys: Vec<DkimKeyConfig>,
}

/// One `[[dkim.keys]]` entry: all three settings are required.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DkimKeyConfig {
    /// PEM private key, as `dkim.key_file`.
    pub key_file: std::path::PathBuf,
    /// The selector, as `dkim.selector`.
    pub selector: String,
    /// The signing domain, as `dkim.domain`.
    pub domain: String,
}

impl DkimConfig {
    /// True when any key is configured (the single form, partly or fully,
    /// or a `[[dkim.keys]]` entry).
    pub fn is_configured(&self) -> bool {
        self.key_file.is_some()
            || self.selector.is_some()
            || self.domain.is_some()
            || !self.keys.is_empty()
    }

    /// Every key, the single-form one first; an incomplete single form is
    /// left out (validation refuses it).
    pub fn all_keys(&self) -> Vec<DkimKeyConfig> {
        let single = match (&self.key_file, &self.selector, &self.domain) {
            (Some(k), Some(s), Some(d)) => Some(DkimKeyConfig {
                key_file: k.clone(),
                selector: s.clone(),
                domain: d.clone(),
            }),
            _ => None,
        };
        single
            .into_iter()
            .chain(self.keys.iter().cloned())
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.key_file.is_some() || self.selector.is_some() || self.domain.is_some() {
            for (key, missing) in [
                ("dkim.key_file", self.key_file.is_none()),
                ("dkim.selector", self.selector.is_none()),
                ("dkim.domain", self.domain.is_none()),
            ] {
                if missing {
                    return Err(ConfigError::Invalid {
                        key,
                        problem:
                            "must be set too: DKIM signing needs key_file, selector and domain"
                                .into(),
                    });
                }
            }
        }
        let label_ok = |s: &str| {
            !s.is_empty()
                && s.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                })
        };
        let mut seen = std::collections::BTreeSet::new();
        for (n, k) in self.all_keys().iter().enumerate() {
            let single = n == 0 && self.key_file.is_some();
            let (sel_key, dom_key) = if single {
                ("dkim.selector", "dkim.domain")
            } else {
                ("dkim.keys.selector", "dkim.keys.domain")
            };
            if !label_ok(&k.selector) {
                return Err(ConfigError::Invalid {
                    key: sel_key,
                    problem: format!(
                        "`{}` must be DNS labels (letters, digits, '-', '_', separated by dots)",
                        k.selector
                    ),
                });
            }
            if !(label_ok(&k.domain) && k.domain.contains('.')) {
                return Err(ConfigError::Invalid {
                    key: dom_key,
                    problem: format!("`{}` must be a domain name such as example.org", k.domain),
                });
            }
            if !seen.insert((
                k.selector.to_ascii_lowercase(),
                k.domain.to_ascii_lowercase(),
            )) {
                return Err(ConfigError::Invalid {
                    key: "dkim.keys",
                    problem: format!(
                        "selector `{}` of `{}` is configured twice: each key needs its own selector",
                        k.selector, k.domain
                    ),
                });
            }
        }
        Ok(())
    }
}

/// `http://` to a loopback host (`localhost`, 127.0.0.0/8, `[::1]`): the one
/// `sending.public_url` that need not be `https://` (tests, where the
/// one-click POST never leaves the machine). The renderer's check of the
/// List-Unsubscribe URL uses this same rule.
#[must_use]
pub fn loopback_http(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `[http]`: the public endpoint behind `sending.public_url` (one-click
/// unsubscribe, re-subscribe, double opt-in). Run it with `rundbrief http
/// serve`, behind a reverse proxy that terminates TLS.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Address to listen on. Default `127.0.0.1:8080` (loopback: put a
    /// reverse proxy with TLS in front). `--listen` on the command wins.
    pub listen: String,
    /// Largest request body accepted, in bytes. Default 16384; a larger
    /// body is answered 413 without being read.
    pub max_body_bytes: usize,
    /// Seconds a request may take from its first byte to the answer
    /// (headers included). Default 10; a slower one is answered 408 or,
    /// while its headers are still arriving, disconnected.
    pub request_timeout_secs: u64,
    /// Connections served at once. Default 256. When all are taken, the
    /// idle keep-alive connection open longest is closed for each new one
    /// (idle connections cannot keep real requests out); only when every
    /// connection is in the middle of a request does a new one wait in the
    /// kernel's accept queue.
    pub max_connections: usize,
    /// Connections one client IP may hold at once. Default 32; 0: no cap.
    /// Over it the connection is answered `503` and closed. Not applied
    /// with `trust_forwarded_for` (behind a proxy every connection comes
    /// from the proxy).
    pub max_connections_per_ip: usize,
    /// Subscription requests (`POST /s/LIST`) one client IP may make per
    /// hour. Default 20; over it the answer is 429 and nothing is stored.
    pub subscribe_per_ip_per_hour: u32,
    /// Confirmation mails one address may be sent per hour. Default 3; over
    /// it the request is answered exactly as before (so the answer tells
    /// nothing), but no further mail goes out.
    pub subscribe_per_address_per_hour: u32,
    /// Take the client IP for rate limiting from the last `X-Forwarded-For`
    /// entry (set it only behind a reverse proxy that writes that header).
    /// Default false: the peer address of the connection.
    pub trust_forwarded_for: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8080".into(),
            max_body_bytes: 16 * 1024,
            request_timeout_secs: 10,
            max_connections: 256,
            max_connections_per_ip: 32,
            subscribe_per_ip_per_hour: 20,
            subscribe_per_address_per_hour: 3,
            trust_forwarded_for: false,
        }
    }
}

/// `[bounce]`: scoring and pruning (Mailman's model with a decaying score).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BounceConfig {
    /// Prune as soon as a subscriber's score reaches the threshold. Default
    /// true. With false, scores are kept and `rundbrief clean` prunes.
    pub auto_prune: bool,
    /// Score at which an address is pruned. Default 5.0.
    pub threshold: f64,
    /// What a day with soft bounces adds. Default 0.5.
    pub soft_weight: f64,
    /// Hard bounces (on different days) before pruning. Default 1: at once.
    pub hard_after: u32,
    /// Days after which a score has halved. Default 14.
    pub half_life_days: f64,
    /// An address the bounce endpoint also accepts mail for: register it with
    /// mailbox providers' feedback loops (e.g. `fbl@bounce.example.org`). ARF
    /// complaints that arrive there unsubscribe the complainer. Default none.
    pub abuse_address: Option<String>,
    /// Bytes of an inbound message the endpoint keeps (the DSN and the
    /// headers of the returned original are at its start; the rest of a
    /// returned attachment is not). Default 262144 (256 KiB).
    pub max_stored_bytes: usize,
    /// Messages one VERP or unsubscribe address may receive at once before
    /// the endpoint answers 450 (a subscriber knows their own return path).
    /// Default 5.
    pub token_burst: u32,
    /// Messages per hour one address may receive after its burst. Default 6.
    pub token_per_hour: u32,
    /// Messages one peer IP may send at once before the endpoint answers
    /// 450. Default 5000; 0 turns the per-peer limit off.
    pub peer_burst: u32,
    /// Messages per second one peer IP may send after its burst. Default 200.
    pub peer_per_second: u32,
    /// Hold a campaign's prunes for one receiving domain when its hard
    /// bounces within `hold_window_secs` exceed this share of the campaign's
    /// deliveries to that domain (a block in disguise). Default 0.2.
    pub hold_ratio: f64,
    /// … and there are at least this many of them. Default 25; 0 turns
    /// holding off.
    pub hold_min: u64,
    /// The window hard bounces are counted in, seconds. Default 3600.
    pub hold_window_secs: u64,
}

impl Default for BounceConfig {
    fn default() -> Self {
        BounceConfig {
            auto_prune: true,
            threshold: 5.0,
            soft_weight: 0.5,
            hard_after: 1,
            half_life_days: 14.0,
            abuse_address: None,
            max_stored_bytes: 256 << 10,
            token_burst: 5,
            token_per_hour: 6,
            peer_burst: 5000,
            peer_per_second: 200,
            hold_ratio: 0.2,
            hold_min: 25,
            hold_window_secs: 3600,
        }
    }
}

/// `[sending]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SendingConfig {
    /// Default `From:` of campaigns, e.g. `"Newsletter <news@example.org>"`.
    pub from: Option<String>,
    /// Optional `Reply-To:` of campaigns.
    pub reply_to: Option<String>,
    /// The domain whose MX points at rundbrief's bounce endpoint. VERP return
    /// paths (`b-TOKEN@…`) and `mailto:` unsubscribe addresses live here.
    /// Sending refuses to start without it.
    pub bounce_domain: Option<String>,
    /// Local-part prefix of VERP return paths. Default `b`.
    pub verp_prefix: String,
    /// Public base URL of the HTTP endpoint, used for one-click unsubscribe
    /// links: `https://news.example.org` gives `https://news.example.org/u/TOKEN`.
    pub public_url: Option<String>,
    /// Domain of generated Message-IDs. Default: the domain of `from`.
    pub message_id_domain: Option<String>,
    /// The sender's postal address, shown in the footer of the shipped
    /// layout (`{{postal_address}}` in a layout of your own). CAN-SPAM
    /// requires a valid physical postal address in every commercial
    /// message; the campaign pre-flight warns when it is unset. One line,
    /// e.g. `"Rundbrief GmbH, Domstraße 1, 50667 Köln, Germany"`. Default: none.
    pub postal_address: Option<String>,
    /// Messages per second over all recipient domains. Default 100.
    pub rate: u32,
    /// Messages per second to one recipient domain. Default 20. A `421` or
    /// `4.7.x` from the relay halves it for a while; it recovers gradually.
    pub domain_rate: u32,
    /// Messages in flight at once to one recipient domain. Default 4.
    pub domain_concurrency: usize,
    /// Share `rate`, `domain_rate` and the `[shaping]` rates with every
    /// worker on the same database (issue #18): workers take send grants
    /// per one-second window from the `provider_budget` table, so two
    /// `rundbrief serve` processes together keep to the configured rates
    /// instead of sending twice as much. `domain_concurrency` stays per
    /// worker. With `false` each process keeps to the rates on its own
    /// (one worker only, no database statement per window). Default true.
    pub shared_limits: bool,
    /// Per-domain overrides: `[sending.domains."gmail.com"] rate = 10, concurrency = 2`.
    pub domains: std::collections::BTreeMap<String, DomainLimitsConfig>,
    /// Seconds before the first retry of a deferred delivery (4xx, timeout,
    /// lost connection); doubles with each attempt, ±25 % jitter. Default 60.
    pub retry_base_secs: u64,
    /// Longest wait between two attempts, in seconds. Default 3600.
    pub retry_max_secs: u64,
    /// A delivery still deferred this many seconds after its first attempt
    /// is `failed` (`campaign retry-failed` sends it again). Default 259200 (3 days).
    pub max_age_secs: u64,
    /// Seconds a worker's claim on a batch lasts; a crashed worker's claims
    /// return to the pool after it. Must exceed the time one batch takes. Default 120.
    pub lease_secs: u64,
}

impl SendingConfig {
    /// The campaign pre-flight's warning when `postal_address` is unset or
    /// blank, saying what to do; `None` when it is set. Pure.
    #[must_use]
    pub fn postal_address_warning(&self) -> Option<String> {
        match self.postal_address.as_deref().map(str::trim) {
            Some(a) if !a.is_empty() => None,
            _ => Some(
                "`sending.postal_address` is not set: CAN-SPAM requires a valid postal address in \
                 every commercial message, and the shipped layout shows it in the footer. Set it \
                 in rundbrief.toml (e.g. postal_address = \"Example GmbH, Domstraße 1, 50667 Köln, \
                 Germany\") or RUNDBRIEF_SENDING__POSTAL_ADDRESS"
                    .to_owned(),
            ),
        }
    }
}

/// `[sending.domains."DOMAIN"]`
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainLimitsConfig {
    /// Messages per second to this domain.
    pub rate: u32,
    /// Messages in flight at once to this domain.
    pub concurrency: usize,
}

impl Default for SendingConfig {
    fn default() -> Self {
        SendingConfig {
            from: None,
            reply_to: None,
            bounce_domain: None,
            verp_prefix: "b".into(),
            public_url: None,
            message_id_domain: None,
            postal_address: None,
            rate: 100,
            domain_rate: 20,
            domain_concurrency: 4,
            shared_limits: true,
            domains: Default::default(),
            retry_base_secs: 60,
            retry_max_secs: 3600,
            max_age_secs: 3 * 24 * 3600,
            lease_secs: 120,
        }
    }
}

/// `[templates]`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TemplatesConfig {
    /// A directory of the operator's own layouts and partials. Default: only
    /// the layouts shipped with rundbrief.
    pub dir: Option<std::path::PathBuf>,
}

/// `[database]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://FILE?mode=rwc` (embedded, default `sqlite://rundbrief.db?mode=rwc`,
    /// created on first use) or `postgres://user@host/db`.
    /// Env: `DATABASE_URL` or `RUNDBRIEF_DATABASE__URL`.
    pub url: String,
    /// Connections in the pool (PostgreSQL; SQLite always uses one writer).
    /// Default 8.
    pub max_connections: u32,
    /// PostgreSQL only: keep every table in this schema (created if
    /// missing), so that several installations can share one database.
    /// Default none (the database's search path, usually `public`).
    /// Env: `RUNDBRIEF_DATABASE__SCHEMA`.
    pub schema: Option<String>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig {
            url: "sqlite://rundbrief.db?mode=rwc".into(),
            max_connections: 8,
            schema: None,
        }
    }
}

/// `[import]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportConfig {
    /// Rows written per transaction. Default 1000. Each committed batch is
    /// durable: an interrupted import keeps every batch it reported.
    pub batch_size: usize,
    /// Longest CSV record accepted, in bytes: one line, or all the lines of a
    /// quoted value with line breaks. Default 1 MiB. A longer record is
    /// reported as invalid (with its line number) and skipped, so a broken
    /// file cannot exhaust memory; a quoted value that runs past it stops the
    /// import, as a quote that is never closed does (see `csvin`).
    pub max_line_bytes: usize,
}

impl Default for ImportConfig {
    fn default() -> Self {
        ImportConfig {
            batch_size: 1000,
            max_line_bytes: 1 << 20,
        }
    }
}

/// `[dns]`: how recipient domains are looked up (MX, A, AAAA) for the
/// domain check and for grouping domains by mailbox provider. Env:
/// `RUNDBRIEF_DNS__SERVERS='["127.0.0.1:5300"]'`, `RUNDBRIEF_DNS__TIMEOUT_SECS`, …
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Run the recipient-domain check at import and before a campaign
    /// sends: a domain that does not exist (NXDOMAIN), has neither MX nor
    /// A/AAAA, or publishes a null MX (RFC 7505) makes its subscribers
    /// `undeliverable`. Default true: mail to such domains can only bounce,
    /// and every bounce costs reputation. The check never marks on a
    /// server failure or timeout, so a broken resolver marks nothing.
    /// `false` (env `RUNDBRIEF_DNS__CHECK=false`) turns it off, e.g.
    /// offline; `--no-dns-check` does so for one command.
    pub check: bool,
    /// Name servers to ask, each `IP` (port 53) or `IP:PORT` (`[::1]:53`
    /// for IPv6 with a port), over UDP, and over TCP when an answer comes
    /// back truncated. Every lookup goes to these servers. Default
    /// empty: the system's resolver configuration (`/etc/resolv.conf`).
    pub servers: Vec<String>,
    /// Seconds to wait for one answer. Default 5; after `attempts` tries the
    /// lookup's result is "unknown" (retried later, never held against the
    /// domain).
    pub timeout_secs: u64,
    /// Tries per lookup. Default 2 (a lookup gives up after
    /// `attempts` × `timeout_secs`).
    pub attempts: usize,
    /// Lookups in flight at once, over all callers. Default 64; further
    /// lookups wait for a free slot.
    pub concurrency: usize,
    /// Answers kept in the cache (one per domain and record type). Default
    /// 100000; when full, the least useful entries are dropped.
    pub cache_size: u64,
    /// Longest time an answer is cached, in seconds, whatever its TTL says.
    /// Default 86400 (a day). Shorter TTLs are honoured.
    pub max_ttl_secs: u64,
    /// Longest time a negative answer (NXDOMAIN, no records of the type) is
    /// cached, in seconds. Such answers are kept for their zone's SOA
    /// minimum (RFC 2308), at most this long; without an SOA, this long.
    /// Default 3600.
    pub negative_ttl_secs: u64,
    /// Seconds a failed lookup (SERVFAIL, REFUSED, timeout) is remembered,
    /// so that a broken domain met again and again (in every batch of an
    /// import) is not asked, and waited for, each time. Its result stays
    /// "unknown"; it is asked again after this. Default 60; 0 asks every
    /// time.
    pub failure_ttl_secs: u64,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            check: true,
            servers: Vec::new(),
            timeout_secs: 5,
            attempts: 2,
            concurrency: 64,
            cache_size: 100_000,
            max_ttl_secs: 86_400,
            negative_ttl_secs: 3_600,
            failure_ttl_secs: 60,
        }
    }
}

impl DnsConfig {
    /// The configured servers as socket addresses (port 53 where none is
    /// given). Empty: use the system's resolver.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming `dns.servers` and the entry that is
    /// neither `IP` nor `IP:PORT`.
    pub fn server_addrs(&self) -> Result<Vec<std::net::SocketAddr>, ConfigError> {
        self.servers
            .iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<std::net::SocketAddr>()
                    .or_else(|_| {
                        s.parse::<std::net::IpAddr>()
                            .map(|ip| std::net::SocketAddr::new(ip, 53))
                    })
                    .map_err(|_| ConfigError::Invalid {
                        key: "dns.servers",
                        problem: format!(
                            "`{s}` is not IP or IP:PORT (e.g. \"127.0.0.1:5300\", \"9.9.9.9\", \"[::1]:53\")"
                        ),
                    })
            })
            .collect()
    }
}

/// `[shaping]`: mailbox providers. Thousands of recipient domains share the
/// MX hosts of a few providers (Google, Microsoft, Yahoo, …); limits apply
/// to the provider as a whole. A domain belongs to a provider when it is
/// one of its `domains`, or when its MX hosts are under one of its
/// `mx_suffixes`; any other domain is a provider of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShapingConfig {
    /// Start from the built-in providers ([`BUILTIN_PROVIDERS`]: google,
    /// microsoft, yahoo, apple, gmx). Default true. With false only the
    /// providers configured here exist.
    pub builtin_providers: bool,
    /// `[shaping.providers.NAME]`: a provider of your own, or changes to a
    /// built-in one (same name: its `domains` and `mx_suffixes` are added
    /// to the built-in lists, its limits replace the defaults).
    pub providers: std::collections::BTreeMap<String, ProviderConfig>,
}

impl Default for ShapingConfig {
    fn default() -> Self {
        ShapingConfig {
            builtin_providers: true,
            providers: Default::default(),
        }
    }
}

/// `[shaping.providers.NAME]`: one mailbox provider. Unset limits fall back
/// to `[sending]`'s per-domain ones, applied to the provider as a whole.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// Recipient domains of this provider, known without DNS: `gmail.com`,
    /// or `hotmail.*` for the name under any top-level domain
    /// (`hotmail.com`, `hotmail.de`, `hotmail.co.uk`: one label, or two
    /// where the first has at most three letters).
    pub domains: Vec<String>,
    /// A domain whose MX host is one of these names or under one of them
    /// (`google.com` matches `aspmx.l.google.com`) belongs to this provider.
    pub mx_suffixes: Vec<String>,
    /// Connections open at once to this provider.
    pub connections: Option<usize>,
    /// Messages over one connection before it is closed.
    pub messages_per_connection: Option<u32>,
    /// Messages per second to this provider.
    pub rate_per_second: Option<u32>,
    /// Messages per hour to this provider.
    pub rate_per_hour: Option<u32>,
}

/// A provider group shipped with rundbrief (see [`ShapingConfig`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinProvider {
    /// The group's name, as shown by `campaign status` and used in
    /// `[shaping.providers.NAME]`.
    pub name: &'static str,
    /// Domains known to belong to it without asking DNS.
    pub domains: &'static [&'static str],
    /// MX host suffixes that place any other domain in it.
    pub mx_suffixes: &'static [&'static str],
}

/// The built-in provider groups, in the order they are matched.
pub const BUILTIN_PROVIDERS: &[BuiltinProvider] = &[
    BuiltinProvider {
        name: "google",
        domains: &["gmail.com", "googlemail.com"],
        mx_suffixes: &["google.com", "googlemail.com"],
    },
    BuiltinProvider {
        name: "microsoft",
        domains: &[
            "outlook.*",
            "hotmail.*",
            "live.*",
            "msn.com",
            "windowslive.com",
        ],
        mx_suffixes: &["outlook.com"],
    },
    BuiltinProvider {
        name: "yahoo",
        domains: &["yahoo.*", "ymail.com", "rocketmail.com", "aol.*", "aim.com"],
        mx_suffixes: &["yahoodns.net"],
    },
    BuiltinProvider {
        name: "apple",
        domains: &["icloud.com", "me.com", "mac.com"],
        mx_suffixes: &["icloud.com", "apple.com"],
    },
    BuiltinProvider {
        name: "gmx",
        domains: &["gmx.*", "web.de"],
        mx_suffixes: &["gmx.net", "web.de"],
    },
];

/// True for a name of lower-case DNS labels (letters, digits, '-', '_')
/// separated by dots.
fn dns_labels(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        })
}

impl ShapingConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |problem: String| {
            Err(ConfigError::Invalid {
                key: "shaping.providers",
                problem,
            })
        };
        for (name, p) in &self.providers {
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
            {
                return bad(format!(
                    "name `{name}` must be letters, digits, '-', '_' or '.'"
                ));
            }
            let builtin =
                self.builtin_providers && BUILTIN_PROVIDERS.iter().any(|b| b.name == name);
            if !builtin && p.domains.is_empty() && p.mx_suffixes.is_empty() {
                return bad(format!(
                    "`{name}` matches nothing: give `domains` or `mx_suffixes` \
                     (only a built-in provider may set limits alone)"
                ));
            }
            for d in &p.domains {
                if !dns_labels(d.strip_suffix(".*").unwrap_or(d)) {
                    return bad(format!(
                        "`{name}.domains`: `{d}` is not a lower-case domain \
                         (`example.org`) or a name under any top-level domain (`example.*`)"
                    ));
                }
            }
            for m in &p.mx_suffixes {
                if !dns_labels(m) {
                    return bad(format!(
                        "`{name}.mx_suffixes`: `{m}` is not a lower-case domain \
                         such as `google.com`"
                    ));
                }
            }
            if p.connections == Some(0)
                || p.messages_per_connection == Some(0)
                || p.rate_per_second == Some(0)
                || p.rate_per_hour == Some(0)
            {
                return bad(format!(
                    "`{name}`: connections, messages_per_connection, \
                     rate_per_second and rate_per_hour must be > 0 when set"
                ));
            }
        }
        Ok(())
    }
}

impl Config {
    /// Checks every value that has a range.
    ///
    /// # Errors
    /// The first key found wrong, with what is wrong about it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(s) = &self.secret {
            s.check("secret")?;
        }
        if let Some(s) = &self.previous_secret {
            s.check("previous_secret")?;
        }
        if self.database.url.trim().is_empty() {
            return Err(ConfigError::Invalid {
                key: "database.url",
                problem: "is empty".into(),
            });
        }
        if self.database.max_connections == 0 {
            return Err(ConfigError::Invalid {
                key: "database.max_connections",
                problem: "must be > 0".into(),
            });
        }
        if !(1..=10_000).contains(&self.import.batch_size) {
            return Err(ConfigError::Invalid {
                key: "import.batch_size",
                problem: "must be between 1 and 10000".into(),
            });
        }
        if self.sending.verp_prefix.is_empty()
            || !self
                .sending
                .verp_prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            || self.sending.verp_prefix.len() > 8
        {
            return Err(ConfigError::Invalid {
                key: "sending.verp_prefix",
                problem: "must be 1 to 8 lower-case letters or digits".into(),
            });
        }
        if let Some(url) = &self.sending.public_url
            && !(url.starts_with("https://") || loopback_http(url))
        {
            return Err(ConfigError::Invalid {
                key: "sending.public_url",
                problem: format!(
                    "`{url}` must start with https:// (one-click unsubscribe links need HTTPS, RFC 8058); \
                     http:// is taken only for a loopback address (localhost, 127.0.0.1, [::1]), for tests"
                ),
            });
        }
        let sd = &self.sending;
        if sd.rate == 0
            || sd.domain_rate == 0
            || sd.domain_concurrency == 0
            || sd.retry_base_secs == 0
            || sd.lease_secs == 0
            || sd
                .domains
                .values()
                .any(|d| d.rate == 0 || d.concurrency == 0)
        {
            return Err(ConfigError::Invalid {
                key: "sending",
                problem: "rates, concurrency, retry_base_secs and lease_secs must be > 0".into(),
            });
        }
        let b = &self.bounce;
        if !(b.threshold > 0.0
            && b.soft_weight > 0.0
            && b.half_life_days > 0.0
            && b.hard_after >= 1)
        {
            return Err(ConfigError::Invalid {
                key: "bounce",
                problem:
                    "threshold, soft_weight and half_life_days must be > 0 and hard_after >= 1"
                        .into(),
            });
        }
        if !(b.max_stored_bytes >= 4096
            && b.token_burst >= 1
            && b.token_per_hour >= 1
            && (0.0..=1.0).contains(&b.hold_ratio)
            && b.hold_window_secs >= 1)
        {
            return Err(ConfigError::Invalid {
                key: "bounce",
                problem: "max_stored_bytes must be >= 4096, token_burst and token_per_hour >= 1, \
                          hold_ratio between 0 and 1 and hold_window_secs >= 1"
                    .into(),
            });
        }
        self.dkim.validate()?;
        for (name, r) in &self.relays {
            validate_relay(name, r)?;
        }
        let h = &self.http;
        if h.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::Invalid {
                key: "http.listen",
                problem: format!("`{}` is not IP:PORT (e.g. 127.0.0.1:8080)", h.listen),
            });
        }
        if h.max_body_bytes < 256
            || h.request_timeout_secs == 0
            || h.max_connections == 0
            || h.subscribe_per_ip_per_hour == 0
            || h.subscribe_per_address_per_hour == 0
        {
            return Err(ConfigError::Invalid {
                key: "http",
                problem: "max_body_bytes must be at least 256; request_timeout_secs, \
                          max_connections and the subscribe limits must be > 0"
                    .into(),
            });
        }
        let d = &self.dns;
        d.server_addrs()?;
        if d.timeout_secs == 0
            || d.attempts == 0
            || d.concurrency == 0
            || d.cache_size == 0
            || d.max_ttl_secs == 0
            || d.negative_ttl_secs == 0
        {
            return Err(ConfigError::Invalid {
                key: "dns",
                problem: "timeout_secs, attempts, concurrency, cache_size, max_ttl_secs and \
                          negative_ttl_secs must be > 0"
                    .into(),
            });
        }
        self.shaping.validate()?;
        let br = &self.breaker;
        if !(br.window >= 1
            && br.min_sample >= 1
            && br.min_sample <= br.window
            && br.block_ratio > 0.0
            && br.block_ratio <= 1.0
            && br.complaint_ratio > 0.0
            && br.complaint_ratio <= 1.0)
        {
            return Err(ConfigError::Invalid {
                key: "breaker",
                problem: format!(
                    "window ({}) and min_sample ({}) must be >= 1 with min_sample <= window; \
                     block_ratio ({}) and complaint_ratio ({}) must be > 0 and <= 1 (0.05 is 5 %)",
                    br.window, br.min_sample, br.block_ratio, br.complaint_ratio
                ),
            });
        }
        if self.import.max_line_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "import.max_line_bytes",
                problem: "must be at least 1024".into(),
            });
        }
        Ok(())
    }

    /// The token signer (current and previous secret).
    ///
    /// # Errors
    /// [`ConfigError::MissingSecret`].
    pub fn signer(&self) -> Result<crate::token::Signer, ConfigError> {
        Ok(crate::token::Signer::new(
            self.require_secret()?.clone(),
            self.previous_secret.clone(),
        ))
    }

    /// The VERP codec for the configured bounce domain.
    ///
    /// # Errors
    /// [`ConfigError::MissingSecret`], or [`ConfigError::Missing`] for `sending.bounce_domain`.
    pub fn verp(&self) -> Result<crate::token::Verp, ConfigError> {
        let domain = self.sending.bounce_domain.as_deref().ok_or(ConfigError::Missing {
            key: "sending.bounce_domain",
            why: "VERP return paths and unsubscribe addresses need the domain whose MX is the bounce endpoint \
                  (set it in rundbrief.toml or RUNDBRIEF_SENDING__BOUNCE_DOMAIN)",
        })?;
        Ok(crate::token::Verp::new(
            self.signer()?,
            self.sending.verp_prefix.clone(),
            domain,
        ))
    }

    /// The signing secret, or an error that says how to get one.
    ///
    /// # Errors
    /// [`ConfigError::MissingSecret`] when none is configured.
    pub fn require_secret(&self) -> Result<&Secret, ConfigError> {
        self.secret.as_ref().ok_or(ConfigError::MissingSecret)
    }
}

/// The checks of `[relays.NAME]` that need no URL parser (the sender
/// parses the URL when the relay is used).
fn validate_relay(name: &str, r: &RelayConfig) -> Result<(), ConfigError> {
    let bad = |problem: String| {
        Err(ConfigError::Invalid {
            key: "relays",
            problem,
        })
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return bad(format!(
            "name `{name}` must be letters, digits, '-', '_' or '.' (it is what --relay NAME picks)"
        ));
    }
    if r.url.trim().is_empty() {
        return bad(format!(
            "`relays.{name}.url` is not set (e.g. url = \"smtp://user@relay.example:587?tls=required\")"
        ));
    }
    if r.password_env.is_some() && r.password_file.is_some() {
        return bad(format!(
            "`relays.{name}`: give password_env or password_file, not both"
        ));
    }
    if r.max_per_hour == Some(0)
        || r.max_per_day == Some(0)
        || r.rest_after_failures == Some(0)
        || r.rest_for_secs == Some(0)
    {
        return bad(format!(
            "`relays.{name}`: max_per_hour, max_per_day, rest_after_failures and \
             rest_for_secs must be > 0 (leave a quota out for no limit; weight = 0 is a standby)"
        ));
    }
    if r.pool_size == Some(0)
        || r.connect_timeout_secs == Some(0)
        || r.command_timeout_secs == Some(0)
        || r.data_timeout_secs == Some(0)
        || r.max_messages_per_connection == Some(0)
    {
        return bad(format!(
            "`relays.{name}`: pool_size, the timeouts and max_messages_per_connection must be > 0"
        ));
    }
    Ok(())
}

/// The commented example configuration `rundbrief init` writes, with `secret`
/// filled in.
pub fn example_toml(secret: &Secret) -> String {
    let secret = String::from_utf8_lossy(secret.expose());
    format!(
        r#"# rundbrief configuration.
#
# Every key is optional and shown with its default. Each can be overridden by an
# environment variable: RUNDBRIEF_<KEY>, with `__` between a section and its key
# (e.g. RUNDBRIEF_IMPORT__BATCH_SIZE=5000). DATABASE_URL sets database.url.
# Precedence: defaults < this file < DATABASE_URL < RUNDBRIEF_* < command-line flags.

# Signs VERP return paths and unsubscribe links (HMAC-SHA256). Keep it private:
# whoever knows it can forge bounces and unsubscribes. Generated by `rundbrief init`.
secret = "{secret}"

# After rotating `secret`, put the old value here for a while: tokens in mail
# sent before the rotation keep verifying.
# previous_secret = ""

# The default relay (lettre URL format): smtp://host:2525,
# smtp://host:587?tls=required (STARTTLS), smtps://host:465.
# relay = "smtp://127.0.0.1:2525"
# It may also name one of the [relays.NAME] below: relay = "company". A relay
# with AUTH must be one of those: a URL has no place for the password.

# Named relays: pick one with `--relay NAME`, a campaign's relay, or relay = "NAME".
# The AUTH password is never in the URL: password_env or password_file.
# Unset options keep their defaults (shown).
# [relays.company]
# url = "smtp://news@smtp.example.com:587?tls=required"
# password_env = "RUNDBRIEF_RELAY_PASSWORD"
# # password_file = "/etc/rundbrief/relay-password"
# # tls = "starttls"   # none | starttls | starttls-opportunistic | tls, when the URL does not say
# pool_size = 4
# connect_timeout_secs = 30
# command_timeout_secs = 60
# data_timeout_secs = 600
# max_messages_per_connection = 100
# # ehlo_name = "news.example.org"

[database]
# sqlite://FILE?mode=rwc (embedded, created on first use) or postgres://user@host/db
url = "sqlite://rundbrief.db?mode=rwc"
# Pool size for PostgreSQL.
max_connections = 8
# PostgreSQL only: keep the tables in this schema (created if missing).
# schema = "rundbrief"

[import]
# Rows written per transaction; every committed batch survives an interruption.
batch_size = 1000
# Longest CSV line accepted (bytes); longer lines are reported and skipped.
max_line_bytes = 1048576

[sending]
# Default From: of campaigns.
# from = "Newsletter <news@example.org>"
# reply_to = "editor@example.org"
# The domain whose MX points at rundbrief's bounce endpoint: VERP return paths
# (b-TOKEN@...) and mailto: unsubscribe addresses live here.
# bounce_domain = "bounce.example.org"
verp_prefix = "b"
# Public base URL of the HTTP endpoint, for one-click unsubscribe links.
# public_url = "https://news.example.org"
# Domain of Message-IDs (default: the domain of `from`).
# message_id_domain = "example.org"
# Your postal address, shown in every campaign's footer (CAN-SPAM requires one;
# the campaign pre-flight warns without it).
# postal_address = "Rundbrief GmbH, Domstraße 1, 50667 Köln, Germany"
# Throttling: messages/s over all domains, per recipient domain, and in flight
# per domain. A 421 or 4.7.x from the relay halves a domain's rate for a while.
rate = 100
domain_rate = 20
domain_concurrency = 4
# The rates hold for all workers on one database together (send grants in the
# provider_budget table); false: per process, for a single worker.
shared_limits = true
# Deferred deliveries (4xx, timeouts) are retried after retry_base_secs,
# doubling up to retry_max_secs, and fail once max_age_secs old.
retry_base_secs = 60
retry_max_secs = 3600
max_age_secs = 259200
# How long a worker's claim on a batch lasts (crash recovery).
lease_secs = 120
# [sending.domains."gmail.com"]
# rate = 10
# concurrency = 2

[templates]
# A directory of your own layouts and partials (default: the built-in ones).
# dir = "templates"

[bounce]
# Prune as soon as a score reaches the threshold; with false, `rundbrief clean` does.
auto_prune = true
# A day with a hard bounce adds threshold / hard_after, a day with soft bounces
# soft_weight; the score halves every half_life_days.
threshold = 5.0
soft_weight = 0.5
hard_after = 1
half_life_days = 14.0
# Register this address with mailbox providers' feedback loops; ARF complaints
# arriving there unsubscribe the complainer.
# abuse_address = "fbl@bounce.example.org"
# What the bounce endpoint keeps of a message (the DSN and the returned
# headers come first; 256 KiB is plenty to classify).
max_stored_bytes = 262144
# Per address (a subscriber knows their own return path) and per peer IP:
# beyond the burst, messages get 450 and the sender retries later.
token_burst = 5
token_per_hour = 6
peer_burst = 5000
peer_per_second = 200
# A block in disguise: when one domain's hard bounces in a campaign exceed
# hold_ratio of its deliveries (and hold_min bounces) within hold_window_secs,
# its prunes are held for `rundbrief bounce held release|discard`.
hold_ratio = 0.2
hold_min = 25
hold_window_secs = 3600

[http]
# The public endpoint behind sending.public_url (`rundbrief http serve`):
# one-click unsubscribe, re-subscribe and double opt-in. Keep it on loopback
# behind a reverse proxy that terminates TLS (public_url must be https://).
listen = "127.0.0.1:8080"
# Larger request bodies get 413; slower requests 408.
max_body_bytes = 16384
request_timeout_secs = 10
max_connections = 256
# POST /s/LIST: requests per client IP per hour (429 over it), and
# confirmation mails per address per hour (over it, the same answer, no mail).
subscribe_per_ip_per_hour = 20
subscribe_per_address_per_hour = 3
# Behind a reverse proxy: take the client IP from X-Forwarded-For.
trust_forwarded_for = false

[dkim]
# Sign every message (RFC 6376). Set all three to switch signing on; then
# `rundbrief dns records` prints the TXT record to publish. `rundbrief dkim
# keygen --out dkim.pem` writes a key (RSA 2048 by default, or Ed25519).
# The domain must be the From: domain or a parent of it for DMARC alignment.
# key_file = "dkim.pem"
# selector = "rb2026"
# domain = "example.org"
# More keys sign every message too: with an RSA key above, an Ed25519 key here
# gives dual signatures (receivers that cannot check Ed25519 use the RSA one).
# [[dkim.keys]]
# key_file = "dkim-ed25519.pem"
# selector = "rb2026e"
# domain = "news.example.org"

[dns]
# Lookups of recipient domains (MX, A, AAAA): the domain check and the
# grouping of domains by mailbox provider. Name servers as "IP" or "IP:PORT",
# asked over UDP with TCP fallback; without `servers`, the system's resolver
# (/etc/resolv.conf).
# The domain check at import and before a campaign sends: subscribers on a
# domain that does not exist, has no MX and no A/AAAA, or a null MX become
# `undeliverable` (reversible: `sub restore`). false turns it off (offline).
check = true
# servers = ["127.0.0.1:5300"]
# Seconds per answer and tries per lookup; then the result is "unknown"
# (retried later, never held against the domain).
timeout_secs = 5
attempts = 2
# Lookups in flight at once, over all callers.
concurrency = 64
# Cached answers (domain and record type), kept for their TTL, at most
# max_ttl_secs; negative answers for their SOA minimum, at most negative_ttl_secs;
# failed lookups (SERVFAIL, timeout: "unknown") for failure_ttl_secs (0: never).
cache_size = 100000
max_ttl_secs = 86400
negative_ttl_secs = 3600
failure_ttl_secs = 60

[shaping]
# Mailbox providers: limits apply to a provider, not to each of its domains.
# Built in: google, microsoft, yahoo, apple, gmx (by well-known domains and by
# the MX hosts a domain resolves to); every other domain is its own provider.
builtin_providers = true
# Change a built-in provider (lists are added to its own) or add one. Unset
# limits fall back to [sending]'s per-domain ones, for the provider as a whole.
# [shaping.providers.google]
# connections = 4
# messages_per_connection = 100
# rate_per_second = 10
# rate_per_hour = 20000
# [shaping.providers.corp]
# domains = ["corp.example", "corp.*"]
# mx_suffixes = ["mx.corp.example"]

[breaker]
# The reputation circuit breaker, per running campaign: a provider whose
# latest outcomes (window) hold more than block_ratio blocks is suspended
# for the campaign; blocks over all providers, or complaints above
# complaint_ratio of the sent mail, pause the whole campaign.
# `campaign resume NAME [--provider P]` lifts it.
window = 500
block_ratio = 0.05
complaint_ratio = 0.003
min_sample = 100
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_defaults_and_bad_values() {
        let c = Config::default();
        assert_eq!(c.breaker.window, 500);
        assert!((c.breaker.block_ratio - 0.05).abs() < 1e-12);
        c.validate().unwrap();
        for bad in [
            BreakerConfig {
                window: 0,
                ..Default::default()
            },
            BreakerConfig {
                min_sample: 501,
                ..Default::default()
            },
            BreakerConfig {
                block_ratio: 0.0,
                ..Default::default()
            },
            BreakerConfig {
                complaint_ratio: 5.0,
                ..Default::default()
            },
        ] {
            let c = Config {
                breaker: bad,
                ..Config::default()
            };
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains("breaker"), "{e}");
        }
    }

    #[test]
    fn example_parses_back_and_validates() {
        let secret = Secret::generate();
        let text = example_toml(&secret);
        let cfg: Config = toml::from_str(&text).expect("the example must be valid TOML for Config");
        cfg.validate().unwrap();
        assert_eq!(cfg.secret.as_ref().unwrap(), &secret);
        assert_eq!(cfg.import.batch_size, 1000);
        assert_eq!(cfg.sending.verp_prefix, "b");
        assert_eq!(cfg.http.listen, "127.0.0.1:8080");
        assert_eq!(cfg.http.subscribe_per_address_per_hour, 3);
        assert_eq!(cfg.dns, DnsConfig::default());
        assert_eq!(cfg.shaping, ShapingConfig::default());
    }

    #[test]
    fn config_with_dns_and_shaping_prints_as_toml_and_reads_back() {
        // `rundbrief config show` prints the configuration as TOML.
        let text = "[dns]\nservers = [\"127.0.0.1:5300\"]\n\
                    [shaping.providers.corp]\nmx_suffixes = [\"mx.corp.example\"]\nrate_per_hour = 100\n";
        let cfg: Config = toml::from_str(text).unwrap();
        let shown = toml::to_string_pretty(&cfg).expect("config show can print it");
        let back: Config = toml::from_str(&shown).unwrap();
        assert_eq!(back.dns, cfg.dns);
        assert_eq!(back.shaping, cfg.shaping);
        let shown = toml::to_string_pretty(&Config::default()).unwrap();
        assert!(
            shown.contains("[dns]") && shown.contains("[shaping]"),
            "{shown}"
        );
    }

    #[test]
    fn dns_servers_parse_and_are_checked() {
        let cfg: Config =
            toml::from_str("[dns]\nservers = [\"127.0.0.1:5300\", \"9.9.9.9\", \"[::1]:53\"]")
                .unwrap();
        cfg.validate().unwrap();
        let addrs = cfg.dns.server_addrs().unwrap();
        assert_eq!(
            addrs,
            vec![
                "127.0.0.1:5300".parse().unwrap(),
                "9.9.9.9:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert!(Config::default().dns.server_addrs().unwrap().is_empty());
        for (text, needle) in [
            ("[dns]\nservers = [\"dns.example:53\"]", "dns.servers"),
            ("[dns]\nconcurrency = 0", "concurrency"),
            ("[dns]\ntimeout_secs = 0", "timeout_secs"),
        ] {
            let cfg: Config = toml::from_str(text).unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(toml::from_str::<Config>("[dns]\nserver = []").is_err());
    }

    #[test]
    fn shaping_providers_parse_and_are_checked() {
        let text = r#"
[shaping.providers.google]
rate_per_second = 10
rate_per_hour = 20000
[shaping.providers.corp]
domains = ["corp.example", "corp.*"]
mx_suffixes = ["mx.corp.example"]
connections = 2
messages_per_connection = 50
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert!(cfg.shaping.builtin_providers);
        assert_eq!(cfg.shaping.providers["google"].rate_per_second, Some(10));
        assert_eq!(cfg.shaping.providers["corp"].domains.len(), 2);
        let bad = [
            // a new provider must match something
            (
                "[shaping.providers.mine]\nconnections = 2",
                "matches nothing",
            ),
            // a built-in one may not once the built-ins are off
            (
                "[shaping]\nbuiltin_providers = false\n[shaping.providers.google]\nconnections = 2",
                "matches nothing",
            ),
            (
                "[shaping.providers.x]\ndomains = [\"Corp.Example\"]",
                "lower-case",
            ),
            (
                "[shaping.providers.x]\ndomains = [\"*.corp\"]",
                "lower-case",
            ),
            (
                "[shaping.providers.x]\nmx_suffixes = [\"a..b\"]",
                "mx_suffixes",
            ),
            ("[shaping.providers.google]\nrate_per_hour = 0", "> 0"),
            (
                "[shaping.providers.\"a b\"]\ndomains = [\"a.b\"]",
                "name `a b`",
            ),
        ];
        for (text, needle) in bad {
            let cfg: Config = toml::from_str(text).unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(toml::from_str::<Config>("[shaping.providers.x]\nrate = 1").is_err());
        // The built-in table is itself valid configuration.
        for b in BUILTIN_PROVIDERS {
            let p = ProviderConfig {
                domains: b.domains.iter().map(|d| d.to_string()).collect(),
                mx_suffixes: b.mx_suffixes.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            };
            let cfg = ShapingConfig {
                builtin_providers: false,
                providers: [(b.name.to_string(), p)].into(),
            };
            cfg.validate().unwrap();
        }
    }

    #[test]
    fn relay_lists_quotas_and_weights_parse_and_are_checked() {
        let text = r#"
relay = ["ses", "mailgun"]
[relays.ses]
url = "smtp://127.0.0.1:2525"
max_per_hour = 5
max_per_day = 50
weight = 3
[relays.mailgun]
url = "smtp://127.0.0.1:2526"
rest_after_failures = 2
rest_for_secs = 60
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.relay.as_deref(), Some("ses,mailgun"));
        assert_eq!(
            relay_list(cfg.relay.as_deref().unwrap()),
            ["ses", "mailgun"]
        );
        let ses = &cfg.relays["ses"];
        assert_eq!(
            (ses.max_per_hour, ses.max_per_day, ses.weight()),
            (Some(5), Some(50), 3)
        );
        assert!(ses.has_quota());
        let mg = &cfg.relays["mailgun"];
        assert_eq!(
            (
                mg.weight(),
                mg.rest_after_failures(),
                mg.rest_for().as_secs()
            ),
            (1, 2, 60)
        );
        assert_eq!(
            (ses.rest_after_failures(), ses.rest_for().as_secs()),
            (3, 300)
        );
        // The single forms are unchanged; config show prints what parses back.
        let one: Config = toml::from_str("relay = \"smtp://h:25\"").unwrap();
        assert_eq!(one.relay.as_deref(), Some("smtp://h:25"));
        let back: Config = toml::from_str(&toml::to_string_pretty(&cfg).unwrap()).unwrap();
        assert_eq!(back.relay, cfg.relay);
        assert!(toml::from_str::<Config>("relay = [\"a,b\"]").is_err());
        for bad in ["max_per_hour = 0", "rest_for_secs = 0"] {
            let cfg: Config =
                toml::from_str(&format!("[relays.x]\nurl = \"smtp://h\"\n{bad}")).unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains("must be > 0"), "{bad}: {e}");
        }
    }

    #[test]
    fn named_relays_parse_and_are_checked() {
        let text = r#"
relay = "company"
[relays.company]
url = "smtp://news@smtp.example.com:587?tls=required"
password_env = "RUNDBRIEF_RELAY_PASSWORD"
pool_size = 8
[relays.local]
url = "smtp://127.0.0.1:2525"
tls = "starttls-opportunistic"
"#;
        let cfg: Config = toml::from_str(text).unwrap();
        cfg.validate().unwrap();
        let c = &cfg.relays["company"];
        assert_eq!(c.pool_size, Some(8));
        assert_eq!(c.password_env.as_deref(), Some("RUNDBRIEF_RELAY_PASSWORD"));
        assert_eq!(
            cfg.relays["local"].tls,
            Some(RelayTls::StarttlsOpportunistic)
        );
        let bad = [
            (
                "[relays.x]\nurl = \"smtp://h\"\npassword_env = \"A\"\npassword_file = \"f\"",
                "not both",
            ),
            ("[relays.x]\nurl = \"smtp://h\"\npool_size = 0", "> 0"),
            ("[relays.x]\npool_size = 1", "url` is not set"),
            ("[relays.\"a b\"]\nurl = \"smtp://h\"", "name `a b`"),
        ];
        for (text, needle) in bad {
            let cfg: Config = toml::from_str(text).unwrap();
            let e = cfg.validate().unwrap_err().to_string();
            assert!(e.contains(needle), "{text}: {e}");
        }
        assert!(toml::from_str::<Config>("[relays.x]\nurl = \"smtp://h\"\ntls = \"yes\"").is_err());
        assert!(
            toml::from_str::<Config>("[relays.x]\nurl = \"smtp://h\"\npassword = \"pw\"").is_err()
        );
    }

    #[test]
    fn verp_needs_secret_and_bounce_domain() {
        let mut cfg = Config::default();
        assert!(matches!(
            cfg.verp(),
            Err(ConfigError::Missing {
                key: "sending.bounce_domain",
                ..
            })
        ));
        cfg.sending.bounce_domain = Some("bounce.example.org".into());
        assert!(matches!(cfg.verp(), Err(ConfigError::MissingSecret)));
        cfg.secret = Some(Secret::generate());
        let verp = cfg.verp().unwrap();
        let id = uuid::Uuid::now_v7();
        assert_eq!(verp.delivery(&verp.address(id)).unwrap(), id);
        cfg.sending.verp_prefix = "Bad-Prefix".into();
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("verp_prefix")
        );
        cfg.sending.verp_prefix = "b".into();
        cfg.sending.public_url = Some("news.example.org".into());
        assert!(cfg.validate().unwrap_err().to_string().contains("https://"));
        // http:// only to a loopback address (tests); elsewhere it would make
        // every message fail at render time (RFC 8058 needs https).
        for (url, ok) in [
            ("https://news.example.org", true),
            ("http://127.0.0.1:8080", true),
            ("http://localhost/x", true),
            ("http://[::1]:8080", true),
            ("http://news.example.org", false),
            ("http://127.0.0.1.example.org", false),
            ("http://localhost@evil.example/", false),
        ] {
            cfg.sending.public_url = Some(url.into());
            assert_eq!(cfg.validate().is_ok(), ok, "{url}");
        }
    }

    #[test]
    fn postal_address_warning() {
        let mut s = SendingConfig::default();
        assert!(
            s.postal_address_warning()
                .is_some_and(|w| w.contains("postal_address"))
        );
        s.postal_address = Some("  ".into());
        assert!(s.postal_address_warning().is_some());
        s.postal_address = Some("Example GmbH, Domstraße 1, 50667 Köln".into());
        assert_eq!(s.postal_address_warning(), None);
    }

    #[test]
    fn dkim_takes_several_keys_and_the_old_form() {
        let cfg: Config = toml::from_str(
            r#"
secret = "0123456789abcdef0123456789abcdef"
[dkim]
key_file = "rsa.pem"
selector = "r1"
domain = "example.org"
[[dkim.keys]]
key_file = "ed.pem"
selector = "e1"
domain = "example.org"
"#,
        )
        .expect("parses");
        cfg.validate().unwrap();
        let keys = cfg.dkim.all_keys();
        assert_eq!(
            keys.iter().map(|k| k.selector.as_str()).collect::<Vec<_>>(),
            ["r1", "e1"]
        );
        // Only [[dkim.keys]], no single form.
        let mut only = cfg.clone();
        only.dkim.key_file = None;
        only.dkim.selector = None;
        only.dkim.domain = None;
        assert!(only.dkim.is_configured());
        only.validate().unwrap();
        assert_eq!(only.dkim.all_keys().len(), 1);
        // The same selector twice is refused.
        let mut twice = cfg.clone();
        twice.dkim.keys[0].selector = "r1".into();
        let err = twice.validate().unwrap_err().to_string();
        assert!(err.contains("configured twice"), "{err}");
        let mut bad = cfg;
        bad.dkim.keys[0].domain = "localhost".into();
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("dkim.keys.domain"), "{err}");
    }

    #[test]
    fn dkim_needs_all_three_keys() {
        let mut cfg = Config::default();
        assert!(!cfg.dkim.is_configured());
        cfg.validate().unwrap();
        cfg.dkim.key_file = Some("dkim.pem".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("dkim.selector"), "{err}");
        cfg.dkim.selector = Some("rb2026".into());
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("dkim.domain"), "{err}");
        cfg.dkim.domain = Some("example.org".into());
        cfg.validate().unwrap();
        cfg.dkim.selector = Some("bad selector".into());
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("dkim.selector")
        );
        cfg.dkim.selector = Some("s1".into());
        cfg.dkim.domain = Some("localhost".into());
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("dkim.domain")
        );
    }

    #[test]
    fn secrets_are_redacted_and_checked() {
        let s = Secret::generate();
        assert_eq!(s.expose().len(), 64);
        assert_ne!(Secret::generate(), s, "two generated secrets must differ");
        assert!(!format!("{s:?}").contains(std::str::from_utf8(s.expose()).unwrap()));
        let cfg = Config {
            secret: Some(Secret::new("short")),
            ..Config::default()
        };
        assert!(
            cfg.validate()
                .unwrap_err()
                .to_string()
                .contains("too short")
        );
        let err = Config::default().require_secret().unwrap_err().to_string();
        assert!(
            err.contains("rundbrief init") && err.contains("RUNDBRIEF_SECRET"),
            "{err}"
        );
    }
}
