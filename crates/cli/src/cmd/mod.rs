//! One module per command group; small commands live here.

pub mod admin;
pub mod bounce;
pub mod campaign;
pub mod clean;
pub mod demo;
pub mod dns;
pub mod export;
pub mod http;
pub mod import;
pub mod list;
pub mod render;
pub mod serve;
pub mod sink;
pub mod smtp;
pub mod sub;

use crate::args::{InitArgs, MigrateCmd};
use crate::config::Loaded;
use crate::output;
use anyhow::{Context, bail};
use rundbrief_core::config::example_toml;
use rundbrief_core::{Address, Config, Secret};
use rundbrief_store::{ConnectConfig, Store};
use std::process::ExitCode;

/// Builds the application layer from the configuration (opening the store
/// and bringing its schema up to date), with `observer` for metrics.
pub async fn open_app(
    cfg: &Config,
    observer: std::sync::Arc<dyn rundbrief_app::Observer>,
) -> anyhow::Result<rundbrief_app::App> {
    Ok(rundbrief_app::App::from_config(cfg.clone(), observer).await?)
}

/// The store of [`open_app`], for the commands where the store already is
/// the service (lists, subscribers, import, export).
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    Ok(
        open_app(cfg, std::sync::Arc::new(rundbrief_app::NoObserver))
            .await?
            .store,
    )
}

async fn connect(cfg: &Config) -> anyhow::Result<Store> {
    let connect = ConnectConfig {
        url: cfg.database.url.clone(),
        max_connections: cfg.database.max_connections,
        pg_schema: cfg.database.schema.clone(),
    };
    Ok(Store::connect(&connect).await?)
}

/// The relay a command uses ([`rundbrief_app::sending::relay_for`]), with
/// the flags that fix a missing one.
///
/// # Errors
/// No relay at all, an unknown name that is no URL, or a relay that cannot
/// be used, each saying what to do.
pub fn relay_for(cfg: &Config, given: Option<&str>) -> anyhow::Result<rundbrief_sender::Relay> {
    rundbrief_app::sending::relay_for(cfg, given).map_err(cli_hint)
}

/// An application error with the command-line flags that fix it, where the
/// service's words name a setting rather than a flag.
pub fn cli_hint(e: rundbrief_app::AppError) -> anyhow::Error {
    if e.reason() == Some(rundbrief_app::Reason::NoRelay) {
        return anyhow::anyhow!(
            "no relay: pass --relay smtp://HOST:PORT or --relay NAME ([relays.NAME]), \
             or set `relay` in rundbrief.toml or RUNDBRIEF_RELAY"
        );
    }
    e.into()
}

/// Parses an address given on the command line.
pub fn address(input: &str) -> anyhow::Result<Address> {
    Address::parse(input).with_context(|| format!("`{input}` is not an address rundbrief can use"))
}

pub fn init(a: &InitArgs) -> anyhow::Result<ExitCode> {
    let secret = Secret::generate();
    if a.print_secret {
        println!("{}", String::from_utf8_lossy(secret.expose()));
        return Ok(ExitCode::SUCCESS);
    }
    if a.path.exists() && !a.force {
        bail!(
            "{} exists already; pass --force to replace it (its secret changes: keep the old one as \
             previous_secret so tokens in mail already sent still verify)",
            a.path.display()
        );
    }
    std::fs::write(&a.path, example_toml(&secret))
        .with_context(|| format!("writing {}", a.path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&a.path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", a.path.display()))?;
    }
    eprintln!(
        "wrote {} with a new secret (readable by you only; keep it private). Edit it to taste, then try `rundbrief list create news`.",
        a.path.display()
    );
    Ok(ExitCode::SUCCESS)
}

pub async fn migrate(
    cfg: &Config,
    cmd: Option<&MigrateCmd>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let store = connect(cfg).await?;
    match cmd.unwrap_or(&MigrateCmd::Up) {
        MigrateCmd::Up => {
            let applied = store.migrate().await?;
            if json {
                output::json(&serde_json::json!({ "applied": applied }))?;
            } else if applied.is_empty() {
                println!("the {} database is up to date", store.backend_name());
            } else {
                for name in &applied {
                    println!("applied {name}");
                }
            }
        }
        MigrateCmd::Status => {
            let status = store.migration_status().await?;
            if json {
                output::json(&status)?;
            } else {
                let rows = status.iter().map(|m| {
                    [
                        m.name.clone(),
                        if m.applied { "applied" } else { "pending" }.to_string(),
                    ]
                });
                println!("{}", output::table(&["migration", "status"], rows));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn config_show(loaded: &Loaded, json: bool) -> anyhow::Result<ExitCode> {
    let file = loaded.file.as_ref().map(|p| p.display().to_string());
    let mut shown = serde_json::to_value(&loaded.config)?;
    if let Some(url) = shown.pointer_mut("/database/url") {
        *url = rundbrief_store::redact_url(url.as_str().unwrap_or_default()).into();
    }
    // A password has no business in a relay URL (using one is refused), but
    // if one was written there, showing the configuration must not print it.
    let redact = |url: &mut serde_json::Value| {
        if let Some(s) = url.as_str() {
            *url = rundbrief_sender::Relay::redact(s).into();
        }
    };
    if let Some(url) = shown.get_mut("relay") {
        redact(url);
    }
    if let Some(relays) = shown.get_mut("relays").and_then(|r| r.as_object_mut()) {
        relays
            .values_mut()
            .filter_map(|r| r.get_mut("url"))
            .for_each(redact);
    }
    if json {
        output::json(&serde_json::json!({ "file": file, "config": shown }))?;
    } else {
        println!(
            "# from: {}",
            file.as_deref()
                .unwrap_or("built-in defaults and environment (no rundbrief.toml found)")
        );
        strip_nulls(&mut shown);
        let toml = toml::to_string_pretty(&shown).context("formatting the configuration")?;
        println!("{toml}");
    }
    Ok(ExitCode::SUCCESS)
}

/// TOML has no null: unset optional keys are left out of `config show`.
fn strip_nulls(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(map) = v {
        map.retain(|_, v| !v.is_null());
        map.values_mut().for_each(strip_nulls);
    }
}

/// Ctrl-C or SIGTERM: what every long-running command stops on.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_for_prefers_the_given_relay_and_resolves_names_first() {
        let mut cfg: Config = toml::from_str(
            "relay = \"local\"\n\
             [relays.local]\nurl = \"smtp://127.0.0.1:2525\"\npool_size = 2\n\
             [relays.other]\nurl = \"smtp://127.0.0.1:2526\"",
        )
        .unwrap();
        let r = relay_for(&cfg, None).unwrap();
        assert_eq!((r.port(), r.options.pool_size), (2525, 2));
        assert_eq!(relay_for(&cfg, Some("other")).unwrap().port(), 2526);
        assert_eq!(
            relay_for(&cfg, Some("smtp://127.0.0.1:2527"))
                .unwrap()
                .port(),
            2527
        );
        let e = format!("{:#}", relay_for(&cfg, Some("nope")).unwrap_err());
        assert!(e.contains("local, other"), "{e}");
        cfg.relay = None;
        let e = format!("{:#}", relay_for(&cfg, None).unwrap_err());
        assert!(e.contains("no relay") && e.contains("--relay NAME"), "{e}");
    }
}
