//! `rundbrief admin`: dashboard users, API keys and the dashboard server
//! (crates/admin).

use crate::args::{AdminCmd, AdminKeyCmd, AdminUserCmd};
use crate::output;
use anyhow::{Context, bail};
use rundbrief_app::App;
use std::io::BufRead;
use std::process::ExitCode;

pub async fn run(app: &App, c: &AdminCmd, json: bool) -> anyhow::Result<ExitCode> {
    match c {
        AdminCmd::User(AdminUserCmd::Add {
            name,
            password_stdin,
        }) => {
            if !*password_stdin {
                bail!("pass --password-stdin and give the password on stdin (never as a flag)");
            }
            check_name(name)?;
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            let password = line.trim_end_matches(['\r', '\n']);
            if password.chars().count() < rundbrief_admin::auth::MIN_PASSWORD_LEN {
                bail!(
                    "the password is too short: at least {} characters",
                    rundbrief_admin::auth::MIN_PASSWORD_LEN
                );
            }
            let hash = rundbrief_admin::hash_password(password)
                .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))?;
            if !app.store.create_admin_user(name, &hash).await? {
                bail!("an admin user named `{name}` already exists");
            }
            if json {
                output::json(&serde_json::json!({ "name": name }))?;
            } else {
                println!("admin user {name} added; `rundbrief admin serve` to log in");
            }
        }
        AdminCmd::Key(AdminKeyCmd::Create { name, scope }) => {
            check_name(name)?;
            let key = rundbrief_admin::new_api_key();
            if !app
                .store
                .create_admin_key(name, scope, &rundbrief_admin::key_hash(&key))
                .await?
            {
                bail!("an API key named `{name}` already exists");
            }
            if json {
                output::json(&serde_json::json!({ "name": name, "scope": scope, "key": key }))?;
            } else {
                println!("{key}");
                eprintln!(
                    "API key {name} ({scope}) created; this is the only time it is shown. \
                     Send it as `Authorization: Bearer KEY`."
                );
            }
        }
        AdminCmd::Serve {
            listen,
            insecure_admin,
            secure_cookies,
        } => {
            let (listener, state) = bind(app, *listen, *insecure_admin, *secure_cookies).await?;
            rundbrief_admin::serve(listener, state, crate::cmd::shutdown_signal()).await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The dashboard's listener and state, for `admin serve` and `serve
/// --admin-listen`: a non-loopback address only with `insecure_admin`.
pub async fn bind(
    app: &App,
    listen: std::net::SocketAddr,
    insecure_admin: bool,
    secure_cookies: bool,
) -> anyhow::Result<(tokio::net::TcpListener, rundbrief_admin::AdminState)> {
    if !listen.ip().is_loopback() && !insecure_admin {
        bail!(
            "refusing to serve the dashboard on {listen}, which is not a loopback address: \
             it speaks plain HTTP. Listen on 127.0.0.1 behind a reverse proxy that terminates \
             TLS (docs/dashboard.md), or pass --insecure-admin"
        );
    }
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let addr = listener.local_addr()?;
    eprintln!("admin dashboard listening on {addr} (open http://{addr}/ and log in)");
    let state = rundbrief_admin::AdminState::new(
        app.clone(),
        rundbrief_admin::AdminOptions {
            secure_cookies,
            ..Default::default()
        },
    );
    Ok((listener, state))
}

/// A user or key name: printable, no spaces, at most 64 characters.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name.chars().count() > 64
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!("`{name}` is not a usable name: 1 to 64 characters, no spaces or control characters");
    }
    Ok(())
}
