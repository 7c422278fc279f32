//! Configuration layering: built-in defaults → `rundbrief.toml` →
//! `DATABASE_URL` → `RUNDBRIEF_*` variables → command-line flags. Read once
//! here; nothing downstream reads the environment again.

use crate::args::Cli;
use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use rundbrief_core::Config;
use std::path::PathBuf;

/// The file read by default when it exists.
pub const DEFAULT_FILE: &str = "rundbrief.toml";

/// The configuration in effect and the file it was read from, if any.
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
}

/// Builds the configuration from every layer and validates it.
///
/// # Errors
/// A named `--config` file that does not exist; a value that does not parse
/// or is out of range, named with its key and where it came from.
pub fn load(cli: &Cli) -> anyhow::Result<Loaded> {
    let file = match &cli.config {
        Some(p) if !p.exists() => bail!(
            "the configuration file {} does not exist (named by --config or RUNDBRIEF_CONFIG); \
             `rundbrief init --path {}` writes one",
            p.display(),
            p.display()
        ),
        Some(p) => Some(p.clone()),
        None => Some(PathBuf::from(DEFAULT_FILE)).filter(|p| p.exists()),
    };
    let mut fig = Figment::new();
    if let Some(f) = &file {
        warn_if_readable_by_others(f);
        fig = fig.merge(Toml::file_exact(f));
    }
    if let Ok(url) = std::env::var("DATABASE_URL") {
        fig = fig.merge(Serialized::default("database.url", url));
    }
    fig = fig.merge(
        Env::prefixed("RUNDBRIEF_")
            .split("__")
            // Not configuration keys: RUNDBRIEF_CONFIG is --config's, and the
            // test suite's and the bench's PostgreSQL URLs are theirs.
            .ignore(&["config", "test_postgres", "bench_postgres"])
            // RUNDBRIEF_SMTP_PASSWORD (smtp check --auth) and names chosen
            // for [relays.NAME] password_env: passwords, never config keys.
            .filter(|k| {
                let k = k.as_str().to_ascii_lowercase();
                k.contains('.') || !k.ends_with("_password")
            }),
    );
    if let Some(url) = &cli.database_url {
        fig = fig.merge(Serialized::default("database.url", url));
    }
    let config: Config = fig.extract().map_err(|e| anyhow::anyhow!(describe(e)))?;
    config.validate().context("invalid configuration")?;
    Ok(Loaded { config, file })
}

/// The configuration file holds the HMAC secret and may hold relay
/// passwords: warn when other users of the machine can read it.
fn warn_if_readable_by_others(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    "the configuration file is readable by other users (it holds the signing secret): \
                     `chmod 600 {}`",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// One line per problem, each naming the key and its source.
fn describe(e: figment::Error) -> String {
    let mut out = String::from("invalid configuration:");
    for err in e {
        let source = err.metadata.as_ref().map(|m| match &m.source {
            Some(figment::Source::File(p)) => p.display().to_string(),
            _ => m.name.to_string(),
        });
        let key = if err.path.is_empty() {
            String::new()
        } else {
            format!("`{}` ", err.path.join("."))
        };
        let kind = kind_text(&err.kind);
        match source {
            Some(src) => out.push_str(&format!("\n  {key}({src}): {kind}")),
            None => out.push_str(&format!("\n  {key}{kind}")),
        }
    }
    out
}

/// What is wrong, in words. figment quotes the list of expected names as a
/// whole although each name in it is quoted already ("expected ``a` or
/// `b``"), so unknown keys and values are worded here.
fn kind_text(kind: &figment::error::Kind) -> String {
    use figment::error::{Kind, OneOf};
    match kind {
        Kind::UnknownField(found, expected) => {
            format!("unknown key `{found}`; expected {}", OneOf(expected))
        }
        Kind::UnknownVariant(found, expected) => {
            format!("unknown value `{found}`; expected {}", OneOf(expected))
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml: &str) -> String {
        let e = Figment::new()
            .merge(Toml::string(toml))
            .extract::<Config>()
            .unwrap_err();
        describe(e)
    }

    #[test]
    fn unknown_keys_and_values_list_what_is_expected() {
        let e = problems("[import]\nbatchsize = 1\n");
        assert!(
            e.contains("`import.batchsize`")
                && e.contains("unknown key `batchsize`; expected `batch_size` or `max_line_bytes`"),
            "{e}"
        );
        let e = problems("[relays.r]\nurl = \"smtp://h\"\ntls = \"yes\"\n");
        assert!(
            e.contains("unknown value `yes`; expected one of `none`, `starttls`"),
            "{e}"
        );
        assert!(!e.contains("``"), "{e}");
    }
}
