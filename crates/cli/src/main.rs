//! `rundbrief`, the command-line binary: parses arguments, sets up logging,
//! loads the configuration, opens (and migrates) the store, and dispatches to
//! one module per command group under `cmd/`. Business logic lives in the
//! library crates; this crate only turns it into commands and output.
//!
//! One exit path: every command returns `anyhow::Result<ExitCode>`, and
//! `main` prints an error once, with its whole context chain, to stderr;
//! a reader that went away (`rundbrief export … | head`) ends the command
//! quietly instead.

mod args;
mod cmd;
mod config;
mod metrics;
mod output;

use anyhow::Context;
use args::{Cli, Command, LogFormat};
use clap::Parser;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    init_tracing(&cli);
    // One TLS crypto provider for the whole process (mixing providers panics).
    rundbrief_smtpd::tls::install_ring_provider();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Do not wait on background tasks once the command is done: sqlx 0.9's pool
    // maintenance task can spin when its pool is dropped without being closed
    // (seen on error paths), and dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(code) => code,
        // Whoever read our output stopped (`| head`): nothing left to say.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = hint_for(&e) {
                eprintln!("hint: {hint}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Init(a) => cmd::init(a),
        Command::Completions { shell } => {
            // clap_complete panics when its writer fails (a closed pipe):
            // generate into memory, then write with an error we can handle.
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut command, "rundbrief", &mut script);
            let mut out = std::io::stdout().lock();
            out.write_all(&script)
                .and_then(|()| out.flush())
                .context("writing the completion script to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Sink(a) => cmd::sink::run(a, cli.json).await,
        Command::Serve(a) => cmd::serve::run(&config::load(&cli)?.config, a).await,
        Command::Demo(a) => cmd::demo::run(a, cli.json).await,
        Command::Clean { dry_run } => cmd::clean::run(&app(&cli).await?, *dry_run, cli.json).await,
        Command::Campaign(c) => cmd::campaign::run(&app(&cli).await?, c, cli.json).await,
        Command::Smtp(c) => cmd::smtp::run(&config::load(&cli)?.config, c, cli.json).await,
        Command::Template(args::TemplateCmd::Check { files }) => {
            cmd::render::check(files, cli.json)
        }
        Command::Render(a) => cmd::render::render(&app(&cli).await?, a).await,
        Command::Bounce(args::BounceCmd::Parse { file }) => cmd::bounce::parse(file, cli.json),
        Command::Bounce(c) => cmd::bounce::run(&app(&cli).await?, c, cli.json).await,
        Command::Config(args::ConfigCmd::Show) => cmd::config_show(&config::load(&cli)?, cli.json),
        Command::Dns(args::DnsCmd::Records(a)) => {
            cmd::dns::records(&config::load(&cli)?.config, a, cli.json)
        }
        Command::Dkim(c) => cmd::dns::dkim(c, cli.json),
        Command::Migrate { cmd } => {
            let loaded = config::load(&cli)?;
            cmd::migrate(&loaded.config, cmd.as_ref(), cli.json).await
        }
        Command::List(c) => {
            cmd::list::run(
                &cmd::open_store(&config::load(&cli)?.config).await?,
                c,
                cli.json,
            )
            .await
        }
        Command::Sub(args::SubCmd::Add {
            email,
            list,
            name,
            confirm: true,
            relay,
            ..
        }) => {
            let (name, relay) = (name.as_deref(), relay.as_deref());
            cmd::sub::sub_add_confirm(&app(&cli).await?, email, list, name, relay, cli.json).await
        }
        Command::Http(args::HttpCmd::Serve { listen, relay }) => {
            cmd::http::serve(&app(&cli).await?, *listen, relay.as_deref()).await
        }
        Command::Admin(c) => cmd::admin::run(&app(&cli).await?, c, cli.json).await,
        Command::Sub(c) => {
            cmd::sub::run(
                &cmd::open_store(&config::load(&cli)?.config).await?,
                c,
                cli.json,
            )
            .await
        }
        Command::Import(a) => {
            let loaded = config::load(&cli)?;
            let store = cmd::open_store(&loaded.config).await?;
            cmd::import::run(&store, &loaded.config, a, cli.json).await
        }
        Command::Export(a) => {
            cmd::export::run(&cmd::open_store(&config::load(&cli)?.config).await?, a).await
        }
    }
}

/// Tables and summaries are printed with `println!`, which panics when
/// stdout's reader has gone (`rundbrief sub ls | head -1` on a long list).
/// That panic, and only that one, ends the process quietly and successfully,
/// as the errors of [`is_broken_pipe`] do; every other panic is reported as
/// usual.
/// What to type to get past a store error: the services and the store speak
/// of what is wrong, the CLI of its flags and commands.
fn hint_for(e: &anyhow::Error) -> Option<&'static str> {
    use rundbrief_store::StoreError as S;
    let store = e.chain().find_map(|c| {
        c.downcast_ref::<S>().or_else(|| {
            c.downcast_ref::<rundbrief_app::AppError>()
                .and_then(|a| a.find::<S>())
        })
    })?;
    Some(match store {
        S::ListNotEmpty { .. } => "pass --force to delete the list and its memberships",
        S::ListInUse { .. } => "pass --force to delete it anyway (the campaigns lose this list)",
        S::Blocklisted(_) => "`rundbrief sub rm` the address first if you are sure",
        S::Inactive { .. } => "pass --resubscribe (only when the subscriber asked for it)",
        S::StatusNeedsList(_) => "name the list with --list",
        S::ListNotFound(_) => "`rundbrief list ls` shows the lists",
        S::CampaignNotFound(_) => "`rundbrief campaign ls` shows the campaigns",
        S::BounceNotFound(_) => "`rundbrief bounce ls` shows the stored messages",
        _ => return None,
    })
}

/// The application layer for a command that uses its services.
async fn app(cli: &Cli) -> anyhow::Result<rundbrief_app::App> {
    let loaded = config::load(cli)?;
    cmd::open_app(
        &loaded.config,
        std::sync::Arc::new(rundbrief_app::NoObserver),
    )
    .await
}

fn quiet_on_closed_stdout() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        report(info);
    }));
}

/// True when writing our output failed because its reader is gone (EPIPE).
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    let epipe = |io: &std::io::Error| io.kind() == std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(epipe)
            // csv's error holds the I/O error without exposing it as a source.
            || c.downcast_ref::<csv::Error>()
                .is_some_and(|e| matches!(e.kind(), csv::ErrorKind::Io(io) if epipe(io)))
    })
}

/// Logs go to stderr: readable text (colours only on a terminal) or JSON
/// lines. `RUST_LOG` wins over -v/-q.
fn init_tracing(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    let default = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            // The demo prints its own story; per-subscriber info lines would drown it.
            0 if matches!(cli.command, Command::Demo(_)) => "warn",
            0 => "warn,rundbrief=info,rundbrief_store=info",
            1 => "info,rundbrief=debug,rundbrief_store=debug,rundbrief_core=debug,lettre=info",
            // lettre logs every line it writes at debug, AUTH credentials and
            // message bodies included: never below info, whatever -v says.
            _ => "debug,rundbrief=trace,rundbrief_store=trace,rundbrief_core=trace,lettre=info",
        }
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_target(false)
            .compact()
            .init(),
    }
}
