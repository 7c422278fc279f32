//! A relay: where to send, how to secure and authenticate the connection,
//! and how many connections to keep. Parsed once from a URL in lettre's
//! format; the password comes from a separate source and never appears in
//! `Debug`, `Display` or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use rundbrief_core::Secret;
use rundbrief_core::config::{RelayConfig, RelayTls};

/// `smtp://` without `tls=`: port 25.
pub const SMTP_PORT: u16 = 25;
/// `smtp://…?tls=required|opportunistic`: port 587.
pub const SUBMISSION_PORT: u16 = 587;
/// `smtps://`: port 465.
pub const SUBMISSIONS_PORT: u16 = 465;

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsMode {
    /// Plain text (`smtp://host`). For loopback relays and tests.
    None,
    /// STARTTLS if the relay offers it, plain text otherwise
    /// (`?tls=opportunistic`). A failed handshake is still an error.
    Opportunistic,
    /// STARTTLS, and refuse to send if the relay does not offer it
    /// (`?tls=required`).
    Required,
    /// TLS from the first byte (`smtps://`, port 465).
    Implicit,
}

/// Where the AUTH password is read from, once, when the relay is built.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PasswordSource {
    /// An environment variable, by name.
    Env(String),
    /// A file; its content with one trailing newline removed.
    File(PathBuf),
}

/// A relay URL or option that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Not a URL at all.
    #[error(
        "relay `{url}` is not a URL ({detail}); write it like smtp://host:2525, smtp://user@host:587?tls=required or smtps://host:465"
    )]
    Syntax {
        /// The URL as given (without any password).
        url: String,
        /// The parser's complaint.
        detail: String,
    },
    /// A scheme other than `smtp` or `smtps`.
    #[error(
        "relay `{url}`: unknown scheme `{scheme}`, use smtp:// (with ?tls=required for STARTTLS) or smtps:// (implicit TLS)"
    )]
    Scheme {
        /// The URL.
        url: String,
        /// The scheme given.
        scheme: String,
    },
    /// No host.
    #[error("relay `{url}` has no host")]
    NoHost {
        /// The URL.
        url: String,
    },
    /// A query parameter we do not know, or a `tls=` value we do not know.
    #[error(
        "relay `{url}`: `{param}` is not understood; the only parameter is tls=required or tls=opportunistic (smtp:// only)"
    )]
    Param {
        /// The URL.
        url: String,
        /// The parameter as written.
        param: String,
    },
    /// `?tls=` on an `smtps://` URL, which is TLS from the first byte.
    #[error(
        "relay `{url}`: `{param}` is not allowed with smtps://, which is always TLS; drop it, or use smtp://…?{param} for STARTTLS"
    )]
    TlsParamWithSmtps {
        /// The URL.
        url: String,
        /// The parameter as written, e.g. `tls=required`.
        param: String,
    },
    /// A password written into the URL.
    #[error(
        "relay `{url}`: do not put the password in the URL (it would end up in configs and logs); define the relay as [relays.NAME] in rundbrief.toml with the user in its url and the password in password_env or password_file"
    )]
    PasswordInUrl {
        /// The URL with the password replaced by `***`.
        url: String,
    },
    /// The password source could not be read.
    #[error("relay password from {source_name}: {detail}")]
    Password {
        /// `env RUNDBRIEF_RELAY_PASSWORD` or `file /path`.
        source_name: String,
        /// What went wrong.
        detail: String,
    },
    /// A password without a user in the URL.
    #[error(
        "relay `{url}`: a password is configured but the URL names no user (smtp://USER@host…)"
    )]
    PasswordWithoutUser {
        /// The URL.
        url: String,
    },
    /// `--relay`/`relay`/a campaign's relay is neither a configured name
    /// nor a URL.
    #[error(
        "relay `{given}` is neither a configured relay ({known}) nor a URL like smtp://host:2525"
    )]
    Unknown {
        /// What was given.
        given: String,
        /// The configured names, comma-separated, or "none configured".
        known: String,
    },
    /// A `[relays.NAME]` entry that cannot be used. The message already
    /// holds the problem's, so the problem is not also a `source()`: an
    /// error chain printed with `{:#}` would say it twice.
    #[error("[relays.{name}]: {problem}")]
    Named {
        /// The relay's name.
        name: String,
        /// What is wrong with it.
        problem: Box<RelayError>,
    },
    /// `tls` in the config contradicts the URL (`smtps://` or `?tls=`).
    #[error("relay `{url}`: tls = \"{configured}\" contradicts the URL; say it in one place")]
    TlsConflict {
        /// The URL.
        url: String,
        /// The configured mode.
        configured: &'static str,
    },
    /// A user in the URL but no password source, for a named relay.
    #[error(
        "relay `{url}` names the AUTH user `{user}` but no password: set password_env or password_file"
    )]
    UserWithoutPassword {
        /// The URL.
        url: String,
        /// The user.
        user: String,
    },
    /// A user in a relay given as a bare URL (`--relay URL`,
    /// `RUNDBRIEF_RELAY`, `relay = "URL"`), or in any relay without a
    /// password: the password never goes in a URL, so such a relay could
    /// only send without AUTH, which is not what naming a user asks for.
    #[error(
        "relay `{url}` names the AUTH user `{user}` but has no password, and a password never goes in the URL: \
         set RUNDBRIEF_SMTP_PASSWORD for it, or add the relay to rundbrief.toml as [relays.NAME] with \
         url = \"{url}\" and password_env or password_file, then use --relay NAME (or relay = \"NAME\"); \
         if the relay needs no AUTH, drop the user from the URL"
    )]
    UrlUserWithoutPassword {
        /// The URL.
        url: String,
        /// The user.
        user: String,
    },
    /// An option out of range.
    #[error("relay option `{option}` {problem}")]
    Option {
        /// The option.
        option: &'static str,
        /// What is wrong.
        problem: String,
    },
}

/// The environment variable a relay given as a bare URL with an AUTH user
/// takes its password from (`--relay`, `RUNDBRIEF_RELAY`, `relay = "URL"`):
/// the password never goes in the URL itself. The same variable holds the
/// password of `smtp check --auth`.
pub const URL_PASSWORD_ENV: &str = "RUNDBRIEF_SMTP_PASSWORD";

/// Tuning of one relay. Every field documents its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayOptions {
    /// Connections kept open to the relay, each used by one send at a time.
    /// Default 4. Sends beyond it wait for a free connection.
    pub pool_size: usize,
    /// Longest wait for DNS plus the TCP connection. Default 30 s; on
    /// expiry the send is deferred (step CONNECT).
    pub connect_timeout: Duration,
    /// Longest wait for the reply to each command (banner and EHLO, STARTTLS,
    /// AUTH, RSET, MAIL, RCPT, DATA). Default 60 s; on expiry the send is
    /// deferred with that step and the connection is dropped.
    pub command_timeout: Duration,
    /// Longest time to write the message body and get the reply to the
    /// final dot. Default 600 s (RFC 5321 §4.5.3.2.6 asks servers for 10 min).
    pub data_timeout: Duration,
    /// Messages sent over one connection before it is closed (QUIT) and a new
    /// one opened. Default 100; 0 is refused.
    pub max_messages_per_connection: u32,
    /// The name sent in EHLO. Default: the URL's path (lettre's convention,
    /// `smtp://host/ehlo.name`), else this machine's host name.
    pub ehlo_name: Option<String>,
    /// Send RSET, MAIL, RCPT and DATA in one write, and read their replies
    /// together, where the relay offers PIPELINING (RFC 2920). Default true:
    /// two round trips per message instead of four. Errors still name the
    /// command whose reply was negative.
    pub pipelining: bool,
    /// Accept any TLS certificate, including self-signed and expired ones
    /// with the wrong name. Default false. **For tests and development
    /// only**: it makes TLS useless against an active attacker.
    pub dangerous_accept_invalid_certs: bool,
}

impl Default for RelayOptions {
    fn default() -> Self {
        Self {
            pool_size: 4,
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(60),
            data_timeout: Duration::from_secs(600),
            max_messages_per_connection: 100,
            ehlo_name: None,
            pipelining: true,
            dangerous_accept_invalid_certs: false,
        }
    }
}

/// A validated relay, ready to connect to.
#[derive(Clone)]
pub struct Relay {
    host: String,
    port: u16,
    tls: TlsMode,
    user: Option<String>,
    password: Option<Secret>,
    /// The URL gave a port (else it follows the TLS mode).
    explicit_port: bool,
    /// The URL said how to secure the connection (`smtps://` or `?tls=`).
    explicit_tls: bool,
    /// Tuning; change it freely before handing the relay to a sender.
    pub options: RelayOptions,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("options", &self.options)
            .finish()
    }
}

impl fmt::Display for Relay {
    /// The URL without any secret, for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls == TlsMode::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://")?;
        if let Some(u) = &self.user {
            write!(f, "{}@", percent_encode_user(u))?;
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{host}:{}", self.port)?;
        match self.tls {
            TlsMode::Required => f.write_str("?tls=required"),
            TlsMode::Opportunistic => f.write_str("?tls=opportunistic"),
            TlsMode::None | TlsMode::Implicit => Ok(()),
        }
    }
}

impl Relay {
    /// `given` (a relay URL, or whatever was given as one) with any password
    /// replaced by `***` (`smtp://u:***@host`): how errors and logs outside
    /// this crate must echo a relay they were given.
    pub fn redact(given: &str) -> String {
        redact(given)
    }

    /// Parses a relay URL in lettre's format:
    ///
    /// | URL | TLS | default port |
    /// |---|---|---|
    /// | `smtp://host` | none | 25 |
    /// | `smtp://host?tls=opportunistic` | STARTTLS if offered | 587 |
    /// | `smtp://user@host?tls=required` | STARTTLS, required | 587 |
    /// | `smtps://host` | implicit TLS | 465 |
    ///
    /// A path (`smtp://host/name.example`) is the EHLO name. A user is
    /// percent-decoded. A password in the URL is refused: use
    /// [`Relay::with_password`].
    ///
    /// # Errors
    /// [`RelayError`] naming the URL and what is wrong with it.
    pub fn parse(input: &str) -> Result<Self, RelayError> {
        if !input.contains("://") {
            return Err(RelayError::Syntax {
                url: redact(input),
                detail: "no smtp:// or smtps:// in front".into(),
            });
        }
        let url = url::Url::parse(input.trim()).map_err(|e| RelayError::Syntax {
            url: redact(input),
            detail: e.to_string(),
        })?;
        let shown = || redact(input);
        if url.password().is_some() {
            return Err(RelayError::PasswordInUrl { url: shown() });
        }
        let mut tls_param = None;
        for (k, v) in url.query_pairs() {
            match (k.as_ref(), v.as_ref()) {
                ("tls", "required") => tls_param = Some(TlsMode::Required),
                ("tls", "opportunistic") => tls_param = Some(TlsMode::Opportunistic),
                _ => {
                    return Err(RelayError::Param {
                        url: shown(),
                        param: format!("{k}={v}"),
                    });
                }
            }
        }
        let (tls, default_port) = match (url.scheme(), tls_param) {
            ("smtp", None) => (TlsMode::None, SMTP_PORT),
            ("smtp", Some(t)) => (t, SUBMISSION_PORT),
            ("smtps", None) => (TlsMode::Implicit, SUBMISSIONS_PORT),
            ("smtps", Some(t)) => {
                return Err(RelayError::TlsParamWithSmtps {
                    url: shown(),
                    param: match t {
                        TlsMode::Opportunistic => "tls=opportunistic",
                        _ => "tls=required",
                    }
                    .into(),
                });
            }
            (scheme, _) => {
                return Err(RelayError::Scheme {
                    url: shown(),
                    scheme: scheme.to_owned(),
                });
            }
        };
        let host = match url.host() {
            Some(url::Host::Domain(d)) if !d.is_empty() => d.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(RelayError::NoHost { url: shown() }),
        };
        let user = (!url.username().is_empty()).then(|| percent_decode(url.username()));
        let path = url.path().trim_matches('/');
        let options = RelayOptions {
            ehlo_name: (!path.is_empty()).then(|| path.to_owned()),
            ..RelayOptions::default()
        };
        Ok(Relay {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            user,
            password: None,
            explicit_port: url.port().is_some(),
            explicit_tls: url.scheme() == "smtps" || tls_param.is_some(),
            options,
        })
    }

    /// The relay `name_or_url` stands for: a name from `relays` (the
    /// `[relays.NAME]` section) first, else a URL ([`Relay::parse`]). This
    /// is the one place `--relay`, `relay = …` and a campaign's relay are
    /// resolved; a named relay's password is read here. A URL carries no
    /// password: one naming an AUTH user takes it from the environment
    /// variable [`URL_PASSWORD_ENV`], and without it is refused here, before
    /// any connection, rather than sent without AUTH.
    ///
    /// # Errors
    /// [`RelayError::Unknown`] for a string that is neither;
    /// [`RelayError::Named`] wrapping what is wrong with a named relay;
    /// the errors of [`Relay::parse`] and [`Relay::validate`] for a URL
    /// ([`RelayError::UrlUserWithoutPassword`] for a user in it).
    pub fn resolve(
        name_or_url: &str,
        relays: &BTreeMap<String, RelayConfig>,
    ) -> Result<Self, RelayError> {
        let given = name_or_url.trim();
        if let Some(cfg) = relays.get(given) {
            return Self::from_config(cfg).map_err(|e| RelayError::Named {
                name: given.to_owned(),
                problem: Box::new(e),
            });
        }
        if given.contains("://") {
            let mut relay = Self::parse(given)?;
            if relay.user.is_some() && relay.password.is_none() {
                // The one password source of a bare URL (as for smtp check --auth).
                if let Some(p) = std::env::var(URL_PASSWORD_ENV)
                    .ok()
                    .filter(|p| !p.is_empty())
                {
                    relay.password = Some(Secret::new(p));
                }
            }
            relay.validate()?;
            return Ok(relay);
        }
        Err(RelayError::Unknown {
            given: redact(given),
            known: if relays.is_empty() {
                "none configured".into()
            } else {
                relays.keys().cloned().collect::<Vec<_>>().join(", ")
            },
        })
    }

    /// A relay from its `[relays.NAME]` entry: the URL, then the TLS mode,
    /// the options and the password (read now) on top, then [`Relay::validate`].
    ///
    /// # Errors
    /// A bad URL, a `tls` that contradicts it, a user without a password
    /// source (or the reverse), an unreadable password, options out of range.
    pub fn from_config(cfg: &RelayConfig) -> Result<Self, RelayError> {
        let mut relay = Self::parse(&cfg.url)?;
        if let Some(mode) = cfg.tls {
            relay.set_tls(match mode {
                RelayTls::None => TlsMode::None,
                RelayTls::Starttls => TlsMode::Required,
                RelayTls::StarttlsOpportunistic => TlsMode::Opportunistic,
                RelayTls::Tls => TlsMode::Implicit,
            })?;
        }
        let o = &mut relay.options;
        if let Some(n) = cfg.pool_size {
            o.pool_size = n;
        }
        let secs = Duration::from_secs;
        if let Some(t) = cfg.connect_timeout_secs {
            o.connect_timeout = secs(t);
        }
        if let Some(t) = cfg.command_timeout_secs {
            o.command_timeout = secs(t);
        }
        if let Some(t) = cfg.data_timeout_secs {
            o.data_timeout = secs(t);
        }
        if let Some(n) = cfg.max_messages_per_connection {
            o.max_messages_per_connection = n;
        }
        if let Some(name) = &cfg.ehlo_name {
            o.ehlo_name = Some(name.clone());
        }
        let source = match (&cfg.password_env, &cfg.password_file) {
            (Some(_), Some(_)) => {
                return Err(RelayError::Option {
                    option: "password_env",
                    problem: "and password_file cannot both be set".into(),
                });
            }
            (Some(var), None) => Some(PasswordSource::Env(var.clone())),
            (None, Some(path)) => Some(PasswordSource::File(path.clone())),
            (None, None) => None,
        };
        relay = match (source, relay.user.clone()) {
            (Some(source), _) => relay.with_password(&source)?,
            (None, Some(user)) => {
                return Err(RelayError::UserWithoutPassword {
                    url: relay.to_string(),
                    user,
                });
            }
            (None, None) => relay,
        };
        relay.validate()?;
        Ok(relay)
    }

    /// Sets how the connection is secured, for a URL that did not say it;
    /// without a port in the URL the port follows (25, 587 or 465).
    ///
    /// # Errors
    /// [`RelayError::TlsConflict`] when the URL said something else.
    pub fn set_tls(&mut self, mode: TlsMode) -> Result<(), RelayError> {
        if self.explicit_tls && mode != self.tls {
            return Err(RelayError::TlsConflict {
                url: self.to_string(),
                configured: match mode {
                    TlsMode::None => "none",
                    TlsMode::Required => "starttls",
                    TlsMode::Opportunistic => "starttls-opportunistic",
                    TlsMode::Implicit => "tls",
                },
            });
        }
        self.tls = mode;
        if !self.explicit_port {
            self.port = match mode {
                TlsMode::None => SMTP_PORT,
                TlsMode::Required | TlsMode::Opportunistic => SUBMISSION_PORT,
                TlsMode::Implicit => SUBMISSIONS_PORT,
            };
        }
        Ok(())
    }

    /// Reads the AUTH password from `source` now; nothing re-reads it later.
    ///
    /// # Errors
    /// [`RelayError::Password`] when the variable is unset or the file
    /// unreadable or empty; [`RelayError::PasswordWithoutUser`] when the URL
    /// names no user.
    pub fn with_password(mut self, source: &PasswordSource) -> Result<Self, RelayError> {
        if self.user.is_none() {
            return Err(RelayError::PasswordWithoutUser {
                url: self.to_string(),
            });
        }
        let (name, value) = match source {
            PasswordSource::Env(var) => (
                format!("env {var}"),
                std::env::var(var).map_err(|e| RelayError::Password {
                    source_name: format!("env {var}"),
                    detail: e.to_string(),
                }),
            ),
            PasswordSource::File(path) => (
                format!("file {}", path.display()),
                std::fs::read_to_string(path).map_err(|e| RelayError::Password {
                    source_name: format!("file {}", path.display()),
                    detail: e.to_string(),
                }),
            ),
        };
        let mut value = value?;
        if value.ends_with('\n') {
            value.pop();
            if value.ends_with('\r') {
                value.pop();
            }
        }
        if value.is_empty() {
            return Err(RelayError::Password {
                source_name: name,
                detail: "is empty".into(),
            });
        }
        self.password = Some(Secret::new(value));
        Ok(self)
    }

    /// Sets the AUTH password directly (already read from a secret store).
    pub fn with_secret(mut self, password: Secret) -> Self {
        self.password = Some(password);
        self
    }

    /// Checks the options, and that a relay naming an AUTH user has its
    /// password (a [`Sender`](crate::Sender) checks this too, so no relay
    /// with a user ever sends without AUTH).
    ///
    /// # Errors
    /// [`RelayError::Option`] for a zero pool size, zero timeouts or zero
    /// messages per connection; [`RelayError::UrlUserWithoutPassword`] for
    /// a user without a password.
    pub fn validate(&self) -> Result<(), RelayError> {
        if let (Some(user), None) = (&self.user, &self.password) {
            return Err(RelayError::UrlUserWithoutPassword {
                url: self.to_string(),
                user: user.clone(),
            });
        }
        let o = &self.options;
        let bad = |option, problem: &str| {
            Err(RelayError::Option {
                option,
                problem: problem.to_owned(),
            })
        };
        if o.pool_size == 0 || o.pool_size > 1024 {
            return bad("pool_size", "must be between 1 and 1024");
        }
        if o.max_messages_per_connection == 0 {
            return bad("max_messages_per_connection", "must be > 0");
        }
        for (name, d) in [
            ("connect_timeout", o.connect_timeout),
            ("command_timeout", o.command_timeout),
            ("data_timeout", o.data_timeout),
        ] {
            if d.is_zero() {
                return bad(name, "must be > 0");
            }
        }
        if let Some(n) = &o.ehlo_name
            && (n.is_empty() || n.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return bad("ehlo_name", "must be a host name without spaces");
        }
        Ok(())
    }

    /// The host name or IP address.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How the connection is secured.
    pub fn tls(&self) -> TlsMode {
        self.tls
    }

    /// The AUTH user, if any.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether a password is configured (never the password itself).
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    pub(crate) fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// The AUTH user and password, for `smtp check --relay NAME`.
    pub fn credentials(&self) -> Option<(String, String)> {
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => {
                Some((u.clone(), String::from_utf8_lossy(p.expose()).into_owned()))
            }
            _ => None,
        }
    }
}

/// `input` (a relay URL, or whatever was given as one) with any password
/// replaced by `***`, for errors and logs: `smtp://u:p@host` becomes
/// `smtp://u:***@host`. It errs on the side of hiding: the userinfo is
/// everything before the last `@`, so a password holding `/`, `?`, `#` or
/// `@` (which makes the URL invalid) is hidden too, and so is one given
/// without a scheme (`u:p@host`).
fn redact(input: &str) -> String {
    let (prefix, rest) = match input.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), input),
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return input.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{prefix}{user}:***@{host}"),
        None => input.to_owned(),
    }
}

/// The user as it must be written in a URL's userinfo (RFC 3986 §3.2.1),
/// so the URL [`Relay`]'s `Display` prints parses back to the same relay:
/// `news@example.org` becomes `news%40example.org`.
fn percent_encode_user(user: &str) -> String {
    let mut out = String::with_capacity(user.len());
    for b in user.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_in_lettres_format() {
        let table = [
            (
                "smtp://127.0.0.1:2525",
                "127.0.0.1",
                2525,
                TlsMode::None,
                None,
            ),
            (
                "smtp://relay.example",
                "relay.example",
                25,
                TlsMode::None,
                None,
            ),
            (
                "smtp://user@relay.example:587?tls=required",
                "relay.example",
                587,
                TlsMode::Required,
                Some("user"),
            ),
            (
                "smtp://relay.example?tls=required",
                "relay.example",
                587,
                TlsMode::Required,
                None,
            ),
            (
                "smtp://relay.example?tls=opportunistic",
                "relay.example",
                587,
                TlsMode::Opportunistic,
                None,
            ),
            (
                "smtps://relay.example",
                "relay.example",
                465,
                TlsMode::Implicit,
                None,
            ),
            (
                "smtps://news%40example.org@relay.example:4650",
                "relay.example",
                4650,
                TlsMode::Implicit,
                Some("news@example.org"),
            ),
            ("smtp://[::1]:2525", "::1", 2525, TlsMode::None, None),
        ];
        for (url, host, port, tls, user) in table {
            let r = Relay::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (r.host(), r.port(), r.tls(), r.user()),
                (host, port, tls, user),
                "{url}"
            );
            // A user needs its password before the relay is usable.
            let r = match user {
                Some(_) => r.with_secret(Secret::new("pw")),
                None => r,
            };
            r.validate().unwrap_or_else(|e| panic!("{url}: {e}"));
        }
        let r = Relay::parse("smtp://relay.example/news.example.org").unwrap();
        assert_eq!(r.options.ehlo_name.as_deref(), Some("news.example.org"));
        assert_eq!(
            Relay::parse("smtp://u@h:587?tls=required")
                .unwrap()
                .to_string(),
            "smtp://u@h:587?tls=required"
        );
        assert_eq!(
            Relay::parse("smtps://news%40example.org@relay.example:4650")
                .unwrap()
                .to_string(),
            "smtps://news%40example.org@relay.example:4650"
        );
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let table = [
            ("relay.example:25", "not a URL"),
            ("http://relay.example", "unknown scheme `http`"),
            (
                "smtp://relay.example?tls=yes",
                "`tls=yes` is not understood",
            ),
            ("smtp://relay.example?starttls=1", "`starttls=1`"),
            (
                "smtps://relay.example?tls=required",
                "relay `smtps://relay.example?tls=required`: `tls=required` is not allowed with smtps://, \
                 which is always TLS; drop it, or use smtp://…?tls=required for STARTTLS",
            ),
            (
                "smtps://relay.example?tls=opportunistic",
                "`tls=opportunistic` is not allowed with smtps://",
            ),
            (
                "smtp://user:hunter2@relay.example",
                "relay `smtp://user:***@relay.example`: do not put the password in the URL",
            ),
            // Not even a valid URL: the password is still hidden.
            (
                "smtp://user:hun/ter2@relay.example",
                "`smtp://user:***@relay.example` is not a URL",
            ),
            (
                "user:hunter2@relay.example:25",
                "`user:***@relay.example:25` is not a URL",
            ),
            ("smtp://relay.example:99999", "not a URL"),
        ];
        for (url, needle) in table {
            let e = Relay::parse(url).expect_err(url).to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(
                !e.contains("hunter2") && !e.contains("ter2"),
                "password leaked: {e}"
            );
        }
        // Neither a name nor a URL: echoed, but without its password.
        let e = Relay::resolve("user:hunter2@relay.example", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`user:***@relay.example`"), "{e}");
        assert_eq!(
            Relay::redact("smtps://u%40x:p@ss@relay.example:465?tls=required"),
            "smtps://u%40x:***@relay.example:465?tls=required"
        );
        assert_eq!(Relay::redact("smtp://u@h:25"), "smtp://u@h:25");
        assert_eq!(Relay::redact("company"), "company");
    }

    /// A URL carries no password, so a URL naming an AUTH user would send
    /// without AUTH: `--relay`, `RUNDBRIEF_RELAY` and `relay = "URL"` all
    /// resolve here, and all refuse it before any connection.
    #[test]
    fn a_url_with_a_user_but_no_password_is_refused() {
        let e = Relay::resolve("smtp://news@127.0.0.1:2525", &BTreeMap::new()).unwrap_err();
        assert!(
            matches!(&e, RelayError::UrlUserWithoutPassword { user, .. } if user == "news"),
            "{e:?}"
        );
        let e = e.to_string();
        for needle in [
            "relay `smtp://news@127.0.0.1:2525` names the AUTH user `news` but has no password",
            "[relays.NAME] with url = \"smtp://news@127.0.0.1:2525\" and password_env or password_file",
            "--relay NAME",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        // The URL shown parses back to the same relay (the user re-encoded).
        let e = Relay::resolve("smtps://news%40example.org@relay.example", &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("url = \"smtps://news%40example.org@relay.example:465\""),
            "{e}"
        );
        // A sender refuses such a relay too, whoever built it; with its
        // password it is fine.
        let r = Relay::parse("smtp://news@127.0.0.1:2525").unwrap();
        assert!(matches!(
            r.validate(),
            Err(RelayError::UrlUserWithoutPassword { .. })
        ));
        r.with_secret(Secret::new("pw")).validate().unwrap();
        // Without a user there is nothing to authenticate.
        Relay::resolve("smtp://127.0.0.1:2525", &BTreeMap::new()).unwrap();
    }

    #[test]
    fn password_comes_from_env_or_file_and_never_shows() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret-pw\n").unwrap();
        let r = Relay::parse("smtp://news@relay.example?tls=required")
            .unwrap()
            .with_password(&PasswordSource::File(file.clone()))
            .unwrap();
        assert!(r.has_password());
        assert_eq!(r.password().unwrap().expose(), b"s3cret-pw");
        for shown in [format!("{r:?}"), r.to_string()] {
            assert!(!shown.contains("s3cret"), "{shown}");
        }
        let e = Relay::parse("smtp://relay.example")
            .unwrap()
            .with_password(&PasswordSource::File(file))
            .unwrap_err();
        assert!(matches!(e, RelayError::PasswordWithoutUser { .. }), "{e}");
        let e = Relay::parse("smtp://u@relay.example")
            .unwrap()
            .with_password(&PasswordSource::Env(
                "RUNDBRIEF_TEST_SURELY_UNSET_VAR".into(),
            ))
            .unwrap_err()
            .to_string();
        assert!(e.contains("env RUNDBRIEF_TEST_SURELY_UNSET_VAR"), "{e}");
    }

    #[test]
    fn resolve_takes_a_name_first_then_a_url() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "file-pw\n").unwrap();
        let mut relays = BTreeMap::new();
        relays.insert(
            "company".to_owned(),
            RelayConfig {
                url: "smtp://news@smtp.example.com".into(),
                password_file: Some(pw.clone()),
                tls: Some(RelayTls::Starttls),
                pool_size: Some(9),
                connect_timeout_secs: Some(3),
                command_timeout_secs: Some(4),
                data_timeout_secs: Some(5),
                max_messages_per_connection: Some(6),
                ehlo_name: Some("news.example.org".into()),
                ..RelayConfig::default()
            },
        );
        relays.insert(
            "local".to_owned(),
            RelayConfig {
                url: "smtp://127.0.0.1:2525".into(),
                ..RelayConfig::default()
            },
        );
        let r = Relay::resolve("company", &relays).unwrap();
        assert_eq!(
            (r.host(), r.port(), r.tls(), r.user()),
            ("smtp.example.com", 587, TlsMode::Required, Some("news"))
        );
        assert_eq!(r.password().unwrap().expose(), b"file-pw");
        let o = &r.options;
        assert_eq!(
            (
                o.pool_size,
                o.connect_timeout,
                o.command_timeout,
                o.data_timeout,
                o.max_messages_per_connection,
                o.ehlo_name.as_deref()
            ),
            (
                9,
                Duration::from_secs(3),
                Duration::from_secs(4),
                Duration::from_secs(5),
                6,
                Some("news.example.org")
            )
        );
        assert!(!format!("{r:?}{r}").contains("file-pw"));
        assert_eq!(Relay::resolve("local", &relays).unwrap().port(), 2525);
        // Not a name: a URL.
        let r = Relay::resolve("smtps://relay.example", &relays).unwrap();
        assert_eq!((r.port(), r.tls()), (465, TlsMode::Implicit));
        // Neither.
        let e = Relay::resolve("compnay", &relays).unwrap_err().to_string();
        assert!(e.contains("compnay") && e.contains("company, local"), "{e}");
        assert!(
            Relay::resolve("x", &BTreeMap::new())
                .unwrap_err()
                .to_string()
                .contains("none configured")
        );
    }

    #[test]
    fn named_relays_refuse_contradictions() {
        let one = |cfg: RelayConfig| {
            let mut m = BTreeMap::new();
            m.insert("r".to_owned(), cfg);
            Relay::resolve("r", &m).unwrap_err().to_string()
        };
        let e = one(RelayConfig {
            url: "smtps://relay.example".into(),
            tls: Some(RelayTls::Starttls),
            ..RelayConfig::default()
        });
        assert!(e.contains("[relays.r]") && e.contains("contradicts"), "{e}");
        let mut m = BTreeMap::new();
        m.insert(
            "r".to_owned(),
            RelayConfig {
                url: "smtp://u@relay.example:587?tls=required".into(),
                ..RelayConfig::default()
            },
        );
        let err = Relay::resolve("r", &m).unwrap_err();
        let e = err.to_string();
        assert!(
            e.starts_with("[relays.r]: relay `smtp://u@relay.example:587?tls=required`")
                && e.contains("no password: set password_env or password_file"),
            "{e}"
        );
        // The problem is in the message once and not again as its source,
        // so printing the chain (`{:#}`) does not repeat it.
        assert_eq!(e.matches("no password").count(), 1, "{e}");
        assert!(std::error::Error::source(&err).is_none(), "{err:?}");
        let e = one(RelayConfig {
            url: "smtp://relay.example".into(),
            password_env: Some("RUNDBRIEF_TEST_SURELY_UNSET_VAR".into()),
            ..RelayConfig::default()
        });
        assert!(e.contains("names no user"), "{e}");
        let e = one(RelayConfig {
            url: "smtp://u@relay.example".into(),
            password_env: Some("RUNDBRIEF_TEST_SURELY_UNSET_VAR".into()),
            ..RelayConfig::default()
        });
        assert!(e.contains("env RUNDBRIEF_TEST_SURELY_UNSET_VAR"), "{e}");
        let e = one(RelayConfig {
            url: "smtp://relay.example".into(),
            pool_size: Some(0),
            ..RelayConfig::default()
        });
        assert!(e.contains("pool_size"), "{e}");
        // The same mode twice is no contradiction; a port in the URL stays.
        let mut m = BTreeMap::new();
        m.insert(
            "r".to_owned(),
            RelayConfig {
                url: "smtp://relay.example:2587?tls=required".into(),
                tls: Some(RelayTls::Starttls),
                ..RelayConfig::default()
            },
        );
        let r = Relay::resolve("r", &m).unwrap();
        assert_eq!((r.port(), r.tls()), (2587, TlsMode::Required));
    }

    #[test]
    fn options_are_checked() {
        let mut r = Relay::parse("smtp://h").unwrap();
        r.options.pool_size = 0;
        assert!(r.validate().unwrap_err().to_string().contains("pool_size"));
        r.options.pool_size = 2;
        r.options.max_messages_per_connection = 0;
        assert!(
            r.validate()
                .unwrap_err()
                .to_string()
                .contains("max_messages_per_connection")
        );
    }
}
