//! The command line, declared with clap. Doc comments here are the `--help`
//! text: the first line is the short help, the rest explains when to use it.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Bulk mailing lists and newsletters: subscriber lists, campaigns sent
/// with per-recipient VERP return paths, and automatic bounce pruning.
///
/// Data lives in an embedded SQLite file (./rundbrief.db) unless DATABASE_URL
/// or the configuration names PostgreSQL. Every command that touches the
/// database brings its schema up to date first.
#[derive(Debug, Parser)]
#[command(
    name = "rundbrief",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Configuration file (TOML). Default: ./rundbrief.toml when it exists.
    /// `rundbrief init` writes a commented one.
    #[arg(long, global = true, env = "RUNDBRIEF_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Database URL (sqlite://FILE?mode=rwc or postgres://user@host/db).
    /// Overrides DATABASE_URL, RUNDBRIEF_DATABASE__URL and the file.
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// Print machine-readable JSON on stdout instead of tables. Logs and
    /// progress always go to stderr, so stdout stays parseable. Commands whose
    /// output is a file format (export's CSV, preview's and render's message,
    /// init's config) print that format either way.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr: -v debug, -vv trace. RUST_LOG, when set, wins.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Log format on stderr: readable text, or one JSON object per line for
    /// log collectors.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the whole pipeline once, locally, with nothing to configure:
    /// import, render, send, bounces, pruning.
    ///
    /// In a fresh directory (a new temporary one unless --dir; it is kept and
    /// printed) on the embedded SQLite default, the demo starts the test sink
    /// and the bounce endpoint on free loopback ports, creates the list
    /// `demo` with --subscribers generated subscribers of which a known share
    /// is dead, renders a Markdown newsletter through the default layout and
    /// sends it. The sink plays the world: 3 % of the addresses are unknown
    /// at RCPT (550 5.1.1), 2 % are accepted and then bounced with an RFC
    /// 3464 DSN to their VERP return path, 1 % are greylisted once (450) and
    /// delivered on retry, one reader sends an out-of-office reply and one a
    /// spam complaint (ARF). The demo waits until every bounce has come back
    /// through the endpoint, prints what happened and checks that the numbers
    /// reconcile: every dead address pruned, no live one (exit status 1 if
    /// not). The directory holds a rundbrief.toml, so the commands it
    /// suggests work from there. The demo reads no configuration of yours
    /// (rundbrief.toml, DATABASE_URL and RUNDBRIEF_* do not apply to it) and
    /// talks to nothing beyond 127.0.0.1.
    ///
    /// --json prints {"sent":N,"bounced":N,"pruned":N,"seconds":F,"msgs_per_s":F, …}.
    Demo(DemoArgs),

    /// Write a commented rundbrief.toml with a freshly generated secret.
    ///
    /// The secret signs VERP return paths and unsubscribe links; commands
    /// that sign or verify refuse to run without one.
    Init(InitArgs),

    /// Bring the database schema up to date, or show what is applied.
    ///
    /// Other commands migrate on start too; this one is for deployments that
    /// migrate as a separate step.
    Migrate {
        #[command(subcommand)]
        cmd: Option<MigrateCmd>,
    },

    /// Create, show and delete mailing lists.
    #[command(subcommand)]
    List(ListCmd),

    /// Add, find, unsubscribe, blocklist and remove subscribers.
    #[command(subcommand)]
    Sub(SubCmd),

    /// Import subscribers from a CSV file into a list.
    ///
    /// The header row must name an `email` column; `name` is optional and
    /// every other column becomes an attribute (usable in templates). UTF-8
    /// with or without BOM; `,`, `;` or TAB separated (detected). Rows with
    /// the same address are merged (later non-empty values win), also with
    /// subscribers already stored. Blocklisted, unsubscribed, bounced and
    /// undeliverable subscribers are reported as skipped, never
    /// re-subscribed (see --resubscribe-bounced). Bad rows are reported with
    /// their line number and do not stop the import.
    ///
    /// Each row's domain goes through the domain check (`[dns] check`, on by
    /// default; --no-dns-check skips it): rows on a domain that does not
    /// exist, has no MX and no A/AAAA, or publishes a null MX are imported
    /// `undeliverable` and listed with their line (`--json`:
    /// `undeliverable`, `undeliverable_rows`). SERVFAIL or a timeout marks
    /// nothing.
    ///
    /// The file is streamed and written in batches, each its own transaction:
    /// after an interruption, run the same command again; it converges on the
    /// same result.
    Import(ImportArgs),

    /// Export a list's subscribers as CSV on stdout (email, name, attributes).
    ///
    /// By default only the list's subscribed members (people who left the
    /// list are not in it, so importing the file elsewhere cannot subscribe
    /// them again); --status all exports everyone. Values a spreadsheet
    /// would run as formulas are written with a `'` in front; with --raw the
    /// output is exact and can be imported again as is.
    Export(ExportArgs),

    /// Prune every subscriber whose bounce score has reached bounce.threshold.
    ///
    /// Only needed with bounce.auto_prune = false, when bounces are scored but
    /// nobody is pruned automatically. --dry-run lists who would be pruned
    /// and with which score. Each prune is audited with the score and the last
    /// bounce that counted (its id, class, status and rule). --json prints
    /// {"dry_run", "pruned", "subscribers": [{"email", "score", "last_bounce"}]};
    /// with --dry-run, "pruned" counts those who would be pruned.
    Clean {
        /// List only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },

    /// Campaigns: create them, send them, see how they went.
    #[command(subcommand)]
    Campaign(CampaignCmd),

    /// Check templates before they are used.
    #[command(subcommand)]
    Template(TemplateCmd),

    /// Render the exact message one subscriber would get, without sending.
    ///
    /// CONTENT is a Markdown (.md) or HTML (.html) file; it and the subject
    /// are handlebars templates (see docs/templates.md). If EMAIL is a
    /// subscriber in the store, their name and attributes are used;
    /// otherwise --name and --attr. Needs the secret (the unsubscribe links
    /// carry signed tokens), sending.public_url and sending.bounce_domain.
    /// Stands in for `campaign preview` until campaigns exist.
    Render(RenderArgs),

    /// A fake SMTP server for dry runs that simulates the world with rules.
    ///
    /// It accepts mail on loopback. Point a campaign's relay at it
    /// (smtp://127.0.0.1:2525) to see exactly what would be sent. With --dir,
    /// each message is stored as an .eml file with `Return-Path: <MAIL FROM>`
    /// and one `Delivered-To: <RCPT>` line per recipient prepended. Rules
    /// (first match wins; PATTERN is a glob on the recipient, `*` matches
    /// anything):
    ///   --reject 'PATTERN=550 5.1.1 User unknown'   refuse at RCPT
    ///   --defer  'PATTERN=451 4.7.1 Try later'      defer at RCPT
    ///   --defer-once 'PATTERN=450 4.2.0 Greylisted' defer each recipient at
    ///                              RCPT once (--defer-times N: N times), then
    ///                              let it through (greylisting)
    ///   --bounce 'PATTERN=5.1.1'   accept, then send an RFC 3464 DSN to the
    ///                              message's return path at --bounce-to
    ///   --auto-reply 'PATTERN'     accept, then send an RFC 3834 out-of-office
    ///                              reply to the return path at --bounce-to
    ///   --complain 'PATTERN'       accept, then send an RFC 5965 ARF spam
    ///                              complaint to the return path at --bounce-to
    ///
    /// Stop it with Ctrl-C: messages in flight are finished first.
    #[command(verbatim_doc_comment)]
    Sink(SinkArgs),

    /// The long-running process: scheduler, sender, bounce endpoint, HTTP
    /// endpoint and Prometheus metrics in one.
    ///
    /// Starts scheduled campaigns when due (and each run of a recurring
    /// one), sends every running campaign with leased batches (several
    /// `serve` processes on one PostgreSQL share a campaign without sending
    /// anything twice), retries deferred deliveries, receives bounces.
    /// SIGTERM or Ctrl-C drains: sends in flight finish, unsent claims are
    /// released, then it exits.
    Serve(ServeArgs),

    /// SMTP diagnostics.
    #[command(subcommand)]
    Smtp(SmtpCmd),

    /// The public HTTP endpoint: one-click unsubscribe, double opt-in.
    #[command(subcommand)]
    Http(HttpCmd),

    /// The web dashboard and JSON API: admin users, API keys, the server.
    #[command(subcommand)]
    Admin(AdminCmd),

    /// Bounces: the inbound endpoint, the stored messages, the parser.
    ///
    /// `bounce serve` runs the SMTP endpoint that receives bounces at the
    /// signed VERP return paths (`rundbrief serve` runs it too, see
    /// --bounce-listen); `bounce ingest` stores and parses bounces collected
    /// elsewhere; `ls`, `show` and `reprocess` look at what is stored and
    /// parse it again; `parse` reads one message without touching the
    /// database. A parsed bounce feeds its subscriber's score and prunes
    /// (bounce.auto_prune) or waits for `rundbrief clean`.
    #[command(subcommand)]
    Bounce(BounceCmd),

    /// Show the configuration in effect (secrets hidden) and where it came from.
    #[command(subcommand)]
    Config(ConfigCmd),

    /// DNS records to publish so that mail from rundbrief is accepted:
    /// SPF, DKIM, DMARC, and the MX of the bounce domain.
    #[command(subcommand)]
    Dns(DnsCmd),

    /// DKIM keys: generate one for [dkim] key_file.
    #[command(subcommand)]
    Dkim(DkimCmd),

    /// Print a shell completion script: `rundbrief completions bash > /etc/bash_completion.d/rundbrief`.
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Where to write the configuration.
    #[arg(long, default_value = "rundbrief.toml", value_name = "FILE")]
    pub path: PathBuf,
    /// Overwrite an existing file (its secret is replaced: tokens in mail
    /// already sent stop verifying unless you keep it as previous_secret).
    #[arg(long)]
    pub force: bool,
    /// Only print a new random secret; write nothing.
    #[arg(long)]
    pub print_secret: bool,
}

#[derive(Debug, Subcommand)]
pub enum MigrateCmd {
    /// Apply every pending migration (the default).
    Up,
    /// List the migrations this build knows and whether each is applied.
    Status,
}

#[derive(Debug, Subcommand)]
pub enum ListCmd {
    /// Create a list.
    Create {
        /// The list's name: used on the command line and shown to readers
        /// (footer, List-Id), e.g. "Team News".
        name: String,
        /// What the list is about (shown to operators).
        #[arg(long)]
        description: Option<String>,
        /// The list's id in List-Id headers, before the From domain (RFC
        /// 2919: lower-case ASCII letters, digits, '-', '_', dots). Default:
        /// derived from the name ("Team News" gives team-news); a name with
        /// non-ASCII letters needs one (`list create bücher --label buecher`).
        #[arg(long)]
        label: Option<String>,
    },
    /// Show every list with its member counts by status.
    Ls,
    /// Show one list and its member counts by status.
    Show { name: String },
    /// Change a list: --public opens its subscribe form (`POST /s/NAME` on
    /// the HTTP endpoint), --private closes it again.
    ///
    /// A new list is private: its form answers exactly as for a list that
    /// does not exist, so the form cannot be used to find out which lists
    /// exist. Open only the lists that strangers may sign up to.
    Edit {
        name: String,
        /// Let the subscribe form take requests for this list.
        #[arg(long, conflicts_with = "private", required_unless_present = "private")]
        public: bool,
        /// The subscribe form answers as for an unknown list (the default).
        #[arg(long)]
        private: bool,
    },
    /// Delete a list and its memberships (subscribers themselves stay).
    ///
    /// Refuses while the list has members, unless --force.
    Rm {
        name: String,
        /// Delete even though the list has members.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubCmd {
    /// Subscribe an address to a list (creating the subscriber if needed).
    Add {
        /// The e-mail address; the domain is lower-cased and IDNA-encoded.
        email: String,
        /// The list to subscribe to.
        #[arg(long)]
        list: String,
        /// The subscriber's name (used in the To: header and templates).
        #[arg(long)]
        name: Option<String>,
        /// An attribute for templates, as key=value; repeat for several.
        #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
        attrs: Vec<(String, String)>,
        /// Make an unsubscribed or bounced subscriber active again. Only when
        /// the person asked for it: mailing people who left harms your reputation.
        #[arg(long)]
        resubscribe: bool,
        /// Double opt-in: leave the membership `unconfirmed` and send the
        /// address a confirmation mail (the same as the subscribe form's,
        /// through the configured relay); it is subscribed once its owner
        /// presses the button behind the link. Needs the secret,
        /// sending.from, sending.public_url, sending.bounce_domain and a relay.
        #[arg(long, conflicts_with_all = ["resubscribe", "attrs"])]
        confirm: bool,
        /// Relay for the confirmation mail (with --confirm); default the configured relay.
        #[arg(long, requires = "confirm")]
        relay: Option<String>,
    },
    /// List subscribers, optionally of one list and with one status.
    Ls {
        /// Only members of this list.
        #[arg(long)]
        list: Option<String>,
        /// active, unsubscribed, bounced, blocklisted or undeliverable; with --list also
        /// subscribed or unconfirmed (the status on that list).
        #[arg(long)]
        status: Option<String>,
        /// Show at most this many (0 = all). Default: 100 rows in the table
        /// (it says how many more there are); with --json, every row unless
        /// --limit is given, so scripts always get the complete list.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Show one subscriber: status, memberships and the audit trail of every change.
    Show { email: String },
    /// Unsubscribe from one list, or (without --list) from everything.
    Unsubscribe {
        email: String,
        #[arg(long)]
        list: Option<String>,
        /// Why (kept in the audit trail).
        #[arg(long, default_value = "operator request")]
        reason: String,
    },
    /// Never mail this address again; imports will not bring it back.
    ///
    /// Works for addresses not yet known, too.
    Blocklist {
        email: String,
        /// Why (kept in the audit trail).
        #[arg(long, default_value = "operator request")]
        reason: String,
    },
    /// Undo a bounce prune: a bounced subscriber becomes active again, on the
    /// lists they were on. (Unsubscribed and blocklisted addresses are not
    /// restored: that was somebody's decision.)
    ///
    /// The bounce score starts again from zero: bounces received before the
    /// restore no longer count, so `rundbrief clean` does not prune the
    /// address again for them, not even after `bounce reprocess`. They stay
    /// stored (`bounce ls`).
    ///
    /// It also undoes the domain check: an `undeliverable` subscriber
    /// becomes active again (the next check marks the address again while
    /// its domain still cannot receive mail; `--no-dns-check` skips it).
    Restore {
        email: String,
        /// Why (kept in the audit trail).
        #[arg(long, default_value = "operator restored after a bounce")]
        reason: String,
    },
    /// Delete a subscriber and their memberships (e.g. an erasure request).
    ///
    /// The audit trail keeps an anonymous entry of the removal. To keep the
    /// address from coming back through an import, use `sub blocklist` instead.
    Rm {
        email: String,
        /// Why (kept in the audit trail).
        #[arg(long, default_value = "operator request")]
        reason: String,
    },
}

fn parse_attr(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        // `email` and `name` are columns of their own (an export would have
        // them twice, and its import would refuse the file).
        Some((k, _)) if ["email", "name"].contains(&k.trim().to_lowercase().as_str()) => {
            Err(format!(
                "`{}` is not an attribute: the address is EMAIL, the name is --name",
                k.trim()
            ))
        }
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file, or - for standard input.
    pub file: PathBuf,
    /// The list to import into (create it first with `rundbrief list create`).
    #[arg(long)]
    pub list: String,
    /// Read and check everything and report the counts a real run would
    /// give, without writing anything.
    #[arg(long)]
    pub dry_run: bool,
    /// Make bounced subscribers found in the file active again (for when they
    /// were pruned by mistake). Blocklisted and unsubscribed ones stay out.
    #[arg(long)]
    pub resubscribe_bounced: bool,
    /// Skip the recipient-domain check for this import. Without it (and
    /// with `[dns] check` on, the default) each row's domain is looked up:
    /// rows on a domain that does not exist, has no MX and no A/AAAA, or
    /// publishes a null MX are imported as `undeliverable` and listed.
    #[arg(long)]
    pub no_dns_check: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The list to export.
    #[arg(long)]
    pub list: String,
    /// Only this status (as for `sub ls --status`); default `subscribed`,
    /// `all` for every member whatever their status.
    #[arg(long, value_name = "S|all")]
    pub status: Option<String>,
    /// Write every value exactly as stored. By default a value starting
    /// with `=`, `+`, `-`, `@`, TAB or CR gets a `'` in front, so a
    /// spreadsheet shows it as text instead of running it as a formula
    /// (CSV injection). Use --raw for a file that a program, or `rundbrief
    /// import`, reads back.
    #[arg(long)]
    pub raw: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Print the effective configuration (secrets shown as <redacted>).
    Show,
}

#[derive(Debug, Subcommand)]
pub enum BounceCmd {
    /// Run the inbound SMTP endpoint that receives bounces.
    ///
    /// It accepts mail only for VERP addresses of sending.bounce_domain whose
    /// signed token verifies (550 5.1.1 otherwise; 550 5.7.1 for any other
    /// domain: it is no relay), stores each message durably before answering
    /// 250, and parses it afterwards. In production it listens on port 25 of
    /// the host the bounce domain's MX names (see docs/bounce-domain.md).
    /// Ctrl-C/SIGTERM finish messages in flight.
    Serve {
        /// Address to listen on (port 25 in production). Port 0 picks one.
        #[arg(long, default_value = "127.0.0.1:2525", value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Largest message accepted, in bytes (SIZE; 552 over it).
        #[arg(long, default_value_t = 10 << 20, value_name = "BYTES")]
        max_size: usize,
        /// Most simultaneous connections (421 over it).
        #[arg(long, default_value_t = 128, value_name = "N")]
        max_connections: usize,
        /// Parse stored messages in this process (1) or only store them (0) and
        /// parse later with `rundbrief bounce reprocess`.
        #[arg(long, default_value_t = 1, value_name = "N")]
        parse_workers: u8,
    },
    /// Store and parse bounces collected elsewhere: .eml files, directories of
    /// them, or one message on standard input (--stdin, e.g. from a Postfix pipe).
    Ingest {
        /// Files or directories.
        paths: Vec<PathBuf>,
        /// Read one message from standard input.
        #[arg(long, conflicts_with = "paths")]
        stdin: bool,
    },
    /// List stored inbound messages, newest first.
    Ls {
        /// Only this class: hard, soft, block, ignore, complaint, unknown.
        #[arg(long)]
        class: Option<String>,
        /// Only this kind: dsn, heuristic, auto-reply, arf, unknown, or
        /// postmaster (mail to postmaster@, kept for you, never a bounce).
        #[arg(long)]
        kind: Option<String>,
        /// Only this state: pending, parsed, failed.
        #[arg(long)]
        state: Option<String>,
        /// Show at most this many (0 = all). Default: the newest 50 in the
        /// table; with --json, every message unless --limit is given, so
        /// scripts always get the complete list.
        #[arg(long, value_name = "N")]
        limit: Option<u64>,
    },
    /// Show one stored message: envelope, parse result, and with --raw the message itself.
    Show {
        id: uuid::Uuid,
        /// Print the raw message after the summary.
        #[arg(long)]
        raw: bool,
    },
    /// Review the prunes held because one receiving domain's hard bounces in
    /// a campaign looked like a block (more than bounce.hold_ratio of its
    /// deliveries there within bounce.hold_window_secs): list them, apply
    /// them, or keep the subscribers. See docs/bounce-domain.md.
    #[command(subcommand)]
    Held(HeldCmd),
    /// Parse stored messages again (after a parser upgrade), and any still pending.
    Reprocess {
        /// Only messages received at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        since: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Parse one message (an .eml file, or - for stdin) and print what it is:
    /// a DSN, a non-standard bounce, an auto-reply or a complaint, with the
    /// class of each recipient and the rule that decided. Touches no database.
    ///
    /// Classes: hard (the address is dead), soft (temporary), block (the
    /// receiver refused us: never prunes), complaint, ignore, unknown.
    Parse {
        /// The message file, or - for standard input.
        file: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the demo's database and configuration (created if
    /// missing; must not hold a rundbrief.db yet). Default: a new directory
    /// under the system's temporary directory, kept afterwards.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// How many subscribers to generate (at least 12).
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub subscribers: u64,
}

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Address to listen on. Port 0 picks a free port (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:2525", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Store each message as an .eml file in this directory (created if missing).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Refuse matching recipients at RCPT: 'PATTERN=CODE ENHANCED TEXT'.
    #[arg(long, value_name = "PATTERN=REPLY")]
    pub reject: Vec<String>,
    /// Defer matching recipients at RCPT with a 4xx: 'PATTERN=CODE ENHANCED TEXT'.
    #[arg(long, value_name = "PATTERN=REPLY")]
    pub defer: Vec<String>,
    /// Defer matching recipients at RCPT with a 4xx only the first time each
    /// is tried (see --defer-times), then accept them: 'PATTERN=CODE ENHANCED TEXT'.
    ///
    /// Simulates greylisting: a sender that retries gets through. Counted per
    /// address while the sink runs.
    #[arg(long, value_name = "PATTERN=REPLY")]
    pub defer_once: Vec<String>,
    /// How many times --defer-once rules defer each recipient before letting it through.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub defer_times: u32,
    /// Let the first N recipients matching PATTERN through, then refuse
    /// every later one at RCPT with a 5xx: 'N:PATTERN=CODE ENHANCED TEXT'.
    ///
    /// Simulates a mailbox provider that starts blocking the sender in the
    /// middle of a campaign ('20:*@blocky.example=550 5.7.1 Blocked'), which
    /// the circuit breaker should notice. Counted over all matching
    /// recipients while the sink runs.
    #[arg(long, value_name = "N:PATTERN=REPLY")]
    pub reject_after: Vec<String>,
    /// As --reject-after, with a 4xx ('N:PATTERN=421 4.7.0 Try later').
    #[arg(long, value_name = "N:PATTERN=REPLY")]
    pub defer_after: Vec<String>,
    /// Accept matching recipients, then bounce them with a DSN: 'PATTERN=STATUS'.
    #[arg(long, value_name = "PATTERN=STATUS")]
    pub bounce: Vec<String>,
    /// Accept matching recipients, then send an automatic out-of-office reply
    /// (RFC 3834, Auto-Submitted: auto-replied) to the return path: 'PATTERN'.
    ///
    /// Bounce handling must recognise and ignore it: nobody is pruned.
    #[arg(long, value_name = "PATTERN")]
    pub auto_reply: Vec<String>,
    /// Accept matching recipients, then send an ARF spam complaint (RFC 5965,
    /// Feedback-Type: abuse, the original headers attached) to the return path: 'PATTERN'.
    ///
    /// What a mailbox provider's feedback loop sends when a user clicks
    /// "spam"; the bounce endpoint unsubscribes the complainer.
    #[arg(long, value_name = "PATTERN")]
    pub complain: Vec<String>,
    /// Where DSNs, auto-replies and complaints are delivered (an SMTP server,
    /// e.g. the bounce endpoint).
    #[arg(long, value_name = "HOST:PORT")]
    pub bounce_to: Option<std::net::SocketAddr>,
    /// Wait this many milliseconds before every reply (a slow server).
    #[arg(long, value_name = "MS")]
    pub latency: Option<u64>,
    /// Close each connection after its N-th message (a flaky server).
    #[arg(long, value_name = "N")]
    pub drop_after: Option<u32>,
    /// Largest message accepted, in bytes (SIZE; 552 over it).
    #[arg(long, default_value_t = 25 << 20, value_name = "BYTES")]
    pub max_size: usize,
    /// Most simultaneous connections (421 over it).
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub max_connections: usize,
    /// Do not offer STARTTLS (by default a self-signed certificate is generated).
    #[arg(long)]
    pub no_tls: bool,
}

#[derive(Debug, Subcommand)]
pub enum HeldCmd {
    /// List the held prunes: campaign, domain, address and the bounce behind it.
    Ls {
        /// Only this receiving domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Apply the held prunes (the addresses really are dead): each is marked bounced.
    Release {
        /// Only this receiving domain.
        #[arg(long)]
        domain: Option<String>,
    },
    /// Discard the held prunes (it was a block): the subscribers stay active.
    Discard {
        /// Only this receiving domain.
        #[arg(long)]
        domain: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum HttpCmd {
    /// Serve the public endpoint behind sending.public_url.
    ///
    /// GET /u/TOKEN shows the unsubscribe page of a mail's link and POST
    /// /u/TOKEN unsubscribes (RFC 8058 one-click, or the page's button);
    /// POST /s/LIST (form fields email, name) asks for a subscription with
    /// double opt-in and sends the confirmation mail; GET/POST /c/TOKEN
    /// confirms. Without a relay there is no /s/LIST. Run it behind a
    /// reverse proxy that terminates TLS (see docs/unsubscribe.md); limits
    /// are in the [http] section of the configuration. Ctrl-C/SIGTERM
    /// finish requests in flight and queued confirmation mails.
    Serve {
        /// Address to listen on; default http.listen (127.0.0.1:8080). Port 0 picks one.
        #[arg(long, value_name = "ADDR")]
        listen: Option<std::net::SocketAddr>,
        /// Relay for confirmation mails; default the configured relay.
        #[arg(long)]
        relay: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TemplateCmd {
    /// Compile a template (content, subject or layout) in strict mode and
    /// report mistakes as FILE:LINE:COLUMN: what is wrong.
    Check {
        /// The template files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The content: Markdown (.md, .markdown) or HTML (.html, .htm).
    #[arg(long, value_name = "FILE")]
    pub content: PathBuf,
    /// The subject line (a template too).
    #[arg(long)]
    pub subject: String,
    /// The recipient.
    #[arg(long, value_name = "EMAIL")]
    pub to: String,
    /// The list the message is for (List-Id, unsubscribe token).
    #[arg(long, default_value = "preview")]
    pub list: String,
    /// Name for an address that is not a subscriber.
    #[arg(long)]
    pub name: Option<String>,
    /// Attribute for an address that is not a subscriber, KEY=VALUE; repeatable.
    #[arg(long = "attr", value_name = "KEY=VALUE", value_parser = parse_attr)]
    pub attrs: Vec<(String, String)>,
    /// A layout directory (layout.html.hbs, optional layout.txt.hbs, partials/).
    /// Default: templates.dir from the configuration, else the shipped layout.
    #[arg(long, value_name = "DIR")]
    pub layout: Option<PathBuf>,
    /// From: header; default sending.from.
    #[arg(long)]
    pub from: Option<String>,
    /// Time zone for dates in the templates (IANA name).
    #[arg(long, default_value = "UTC")]
    pub tz: String,
    /// Write the message to this file instead of stdout.
    #[arg(long, value_name = "FILE.eml")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum SmtpCmd {
    /// Walk through an SMTP dialogue with a relay and report each step:
    /// DNS, connect, banner, EHLO (extensions), STARTTLS, AUTH, MAIL FROM,
    /// optionally RCPT TO, then QUIT. Nothing is sent.
    ///
    /// Each step is printed with its time and the server's reply; a failing
    /// step prints a hint for the usual causes (port 25 blocked, 465 vs 587,
    /// self-signed certificate, AUTH before TLS, relay access denied). The
    /// exit code is non-zero when a step fails. The password for --auth is
    /// read from RUNDBRIEF_SMTP_PASSWORD and never printed. After STARTTLS
    /// (or with --tls) the server's certificate is summarised: subject,
    /// issuer, expiry and whether it is valid for HOST.
    Check {
        /// The relay: HOST or HOST:PORT (default port 25; 587 with --starttls; 465 with --tls).
        /// Without HOST and --relay: the configured default relay (`relay`
        /// in rundbrief.toml, RUNDBRIEF_RELAY).
        #[arg(conflicts_with = "relay")]
        target: Option<String>,
        /// Check a configured relay instead of HOST: a [relays.NAME] (its
        /// host, port, TLS mode, AUTH user and password, EHLO name) or a
        /// relay URL. --starttls, --tls, --auth and --ehlo still override; a
        /// URL naming a user needs --auth (it carries no password).
        #[arg(long, value_name = "NAME|URL")]
        relay: Option<String>,
        /// Require STARTTLS after EHLO (submission, port 587).
        #[arg(long, conflicts_with = "tls")]
        starttls: bool,
        /// Implicit TLS from the first byte (port 465).
        #[arg(long)]
        tls: bool,
        /// Authenticate (AUTH PLAIN, or LOGIN where PLAIN is not offered) as
        /// this user; password from RUNDBRIEF_SMTP_PASSWORD. The password is
        /// sent only when the server advertises AUTH.
        #[arg(long, value_name = "USER")]
        auth: Option<String>,
        /// MAIL FROM address. Default: a VERP return path when the secret and
        /// sending.bounce_domain are configured, else the null sender <>.
        #[arg(long, value_name = "ADDR")]
        from: Option<String>,
        /// Also try RCPT TO this address (sender/recipient verification).
        #[arg(long, value_name = "ADDR")]
        to: Option<String>,
        /// Name to give in EHLO. Default: the relay's ehlo_name, else localhost.
        #[arg(long)]
        ehlo: Option<String>,
        /// Seconds each step may take.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
        /// Accept any TLS certificate (self-signed test servers only).
        #[arg(long)]
        insecure: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum CampaignCmd {
    /// Create a campaign (a draft) for one or more lists.
    Create {
        name: String,
        /// A list to send to; repeat for several (each subscriber gets one copy).
        #[arg(long = "list", required = true)]
        lists: Vec<String>,
        /// The subject (a template).
        #[arg(long)]
        subject: String,
        /// The content: Markdown (.md) or HTML (.html), a template.
        #[arg(long, value_name = "FILE")]
        content: PathBuf,
        /// A layout directory; default templates.dir, else the shipped layout.
        #[arg(long, value_name = "DIR")]
        layout: Option<PathBuf>,
        /// From: header; default sending.from.
        #[arg(long)]
        from: Option<String>,
        /// Relay for this campaign: a [relays.NAME] or a URL; default the configured relay.
        /// Several, separated by commas (`ses,mailgun`), share the campaign by
        /// their weights, within their quotas, with failover.
        #[arg(long)]
        relay: Option<String>,
    },
    /// List campaigns, newest first.
    Ls,
    /// Send a campaign now, in the foreground, until every recipient has an
    /// outcome. Materialises one delivery per eligible recipient first
    /// (active, subscribed, once across lists); running it again sends only
    /// to those still pending or deferred, never twice to the same delivery.
    Send {
        name: String,
        /// Relay: a [relays.NAME] or a URL (overrides the campaign's and RUNDBRIEF_RELAY);
        /// several separated by commas (`ses,mailgun`) share the send by weight and quota.
        #[arg(long)]
        relay: Option<String>,
        /// Simultaneous SMTP connections (default: the relay's pool_size, 4
        /// unless a [relays.NAME] says otherwise).
        #[arg(long)]
        pool: Option<usize>,
        /// Also wait for the retries of deferred deliveries (and for the send
        /// window to open) until every recipient has a final outcome. Without
        /// it, `send` returns when only later retries are left; `serve` or
        /// another `send` picks them up.
        #[arg(long)]
        wait: bool,
        /// Accept any TLS certificate from the relay (test relays only).
        #[arg(long)]
        insecure: bool,
        /// Refuse to send when the deliverability pre-flight warns (no DKIM,
        /// From not aligned with the DKIM domain, no unsubscribe link).
        #[arg(long)]
        strict: bool,
        /// Skip the recipient-domain check before sending. Without it (and
        /// with `[dns] check` on, the default) the domains of the recipients
        /// still to send are looked up first: recipients on a domain that
        /// does not exist, has no MX and no A/AAAA, or a null MX become
        /// `undeliverable` and their deliveries `skipped`.
        #[arg(long)]
        no_dns_check: bool,
    },
    /// Print the exact message one subscriber gets from this campaign.
    ///
    /// When the campaign has already a delivery for the subscriber, its id is
    /// used, so Message-ID and unsubscribe tokens are those of the real send.
    Preview {
        name: String,
        /// The subscriber.
        #[arg(long, value_name = "EMAIL")]
        to: String,
        /// Write the message to this file instead of stdout.
        #[arg(long, value_name = "FILE.eml")]
        out: Option<PathBuf>,
    },
    /// Pause a running campaign: its send stops within one batch; `resume` continues.
    Pause { name: String },
    /// Continue a paused campaign (in the foreground, like `send`): nobody is
    /// sent twice and nobody skipped. Like `send`, it returns when only
    /// retries later than now are left; --wait stays for them (and for the
    /// send window) until every delivery has its outcome. Also lifts the
    /// circuit breaker: every suspended provider and a breaker's pause, or
    /// only the provider named by --provider.
    Resume {
        name: String,
        /// Stay until every delivery has a final outcome (retries, send window).
        #[arg(long)]
        wait: bool,
        /// Relay: a [relays.NAME] or a URL (overrides the campaign's and RUNDBRIEF_RELAY);
        /// several separated by commas (`ses,mailgun`) share the send by weight and quota.
        #[arg(long)]
        relay: Option<String>,
        /// Simultaneous SMTP connections (default: the relay's pool_size, 4
        /// unless a [relays.NAME] says otherwise).
        #[arg(long)]
        pool: Option<usize>,
        /// Accept any TLS certificate from the relay (test relays only).
        #[arg(long)]
        insecure: bool,
        /// Skip the recipient-domain check before sending. Without it (and
        /// with `[dns] check` on, the default) the domains of the recipients
        /// still to send are looked up first: recipients on a domain that
        /// does not exist, has no MX and no A/AAAA, or a null MX become
        /// `undeliverable` and their deliveries `skipped`.
        #[arg(long)]
        no_dns_check: bool,
        /// Lift only the circuit breaker's suspension of this provider (a
        /// name from `campaign status`: `google`, or a domain); without it,
        /// resume lifts every suspended provider and a breaker's pause.
        #[arg(long, value_name = "PROVIDER")]
        provider: Option<String>,
    },
    /// Cancel a campaign for good; pending deliveries are never sent.
    Cancel { name: String },
    /// Progress of a campaign: total, sent, deferred, failed, bounced,
    /// pending, and while it runs the current rate and an ETA. Under the
    /// counts, the top 10 reasons deliveries failed, wait or were refused
    /// (the SMTP step and reply, or the render error), most frequent first;
    /// `--json` adds them as `errors: [{state, error, count}]`.
    Status { name: String },
    /// Everything about one campaign: state, lists, schedule, progress, runs.
    Show { name: String },
    /// Change a draft: subject, content, layout, From, relay.
    Edit {
        name: String,
        #[arg(long)]
        subject: Option<String>,
        /// New content: Markdown (.md) or HTML (.html).
        #[arg(long, value_name = "FILE")]
        content: Option<PathBuf>,
        #[arg(long, value_name = "DIR")]
        layout: Option<PathBuf>,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        relay: Option<String>,
    },
    /// Schedule a draft: once (--at) or recurring (--cron), in a time zone.
    ///
    /// `rundbrief serve` starts it when due. A recurring campaign stays
    /// `scheduled`; each occurrence runs as a campaign of its own named
    /// NAME@DATE with its own recipient snapshot and statistics. A run missed
    /// while no server was running starts late, once. Times are wall-clock
    /// times in --tz, daylight saving included (a time skipped by the clocks
    /// going forward is refused; one that happens twice means the first).
    #[command(group(clap::ArgGroup::new("when").required(true).args(["at", "cron"])))]
    Schedule {
        name: String,
        /// One-off: "2026-12-01 09:00" (in --tz) or RFC 3339 with an offset.
        #[arg(long)]
        at: Option<String>,
        /// Recurring: five cron fields, e.g. "0 9 * * TUE" (Tuesdays 09:00).
        #[arg(long)]
        cron: Option<String>,
        /// IANA time zone of --at, --cron and --window. Default: the zone of
        /// the campaign's current schedule when it is scheduled again, else UTC.
        #[arg(long)]
        tz: Option<String>,
        /// Only send between these local times, e.g. 08:00-20:00; outside
        /// it sending pauses and resumes by itself. Scheduling again keeps
        /// the current window unless this is given; `none` removes it.
        #[arg(long, value_name = "HH:MM-HH:MM|none")]
        window: Option<String>,
        /// Deliver at --at on each reader's own wall clock: --at is then a
        /// time ("09:00") or a day and a time ("2026-12-04 09:00"), and
        /// every reader gets the message when it is that time in their
        /// IANA zone, read from a subscriber attribute (--tz-attr). Without
        /// a day the campaign starts at once and each reader gets it at the
        /// next 09:00 in their zone (tomorrow where 09:00 is over); with a
        /// day it starts when that day's 09:00 begins anywhere. A time the
        /// clocks skip moves to the first minute after the gap; one that
        /// happens twice means the first. The send window and rate limits
        /// still apply. Scheduling again without this flag sends at one
        /// instant again. Not with --cron.
        #[arg(long, conflicts_with = "cron", requires = "at")]
        local_time: bool,
        /// With --local-time: the subscriber attribute holding the reader's
        /// IANA zone (e.g. an import column `tz` with "America/New_York").
        #[arg(
            long,
            value_name = "ATTR",
            requires = "local_time",
            default_value = "tz"
        )]
        tz_attr: String,
        /// With --local-time: the zone of readers whose attribute is missing
        /// or not an IANA zone (how many, `campaign schedule` and `status`
        /// say). Default: --tz (or the campaign's zone, else UTC).
        #[arg(long, value_name = "ZONE", requires = "local_time")]
        default_tz: Option<String>,
    },
    /// Take a scheduled campaign back to draft (to edit it; `schedule` it
    /// again afterwards). `cancel` ends a campaign for good instead.
    Unschedule { name: String },
    /// Mark a draft or scheduled campaign running now; `rundbrief serve`
    /// sends it (use `send` to send in the foreground instead).
    Start {
        name: String,
        /// Refuse when the deliverability pre-flight warns.
        #[arg(long)]
        strict: bool,
        /// Skip the recipient-domain check that `start` runs on the
        /// campaign's recipients (`serve` checks again before each pass
        /// unless `[dns] check = false` or `serve --no-dns-check`).
        #[arg(long)]
        no_dns_check: bool,
    },
    /// Send again to the recipients whose delivery failed (our error, or
    /// deferred past sending.max_age_secs) and who are still active.
    RetryFailed {
        name: String,
        /// Send now in the foreground (like `send --wait`): everything
        /// pending for the campaign, including what an earlier
        /// `retry-failed` without --send reset.
        #[arg(long)]
        send: bool,
        #[arg(long)]
        relay: Option<String>,
        /// SMTP connections (default: the relay's pool_size).
        #[arg(long)]
        pool: Option<usize>,
        /// Skip the recipient-domain check before sending (with --send).
        #[arg(long)]
        no_dns_check: bool,
    },
    /// Send one real copy to ADDR with "[TEST]" before the subject and an
    /// X-Rundbrief-Test header; it is not recorded as a delivery.
    Test {
        name: String,
        #[arg(long, value_name = "ADDR")]
        to: String,
        #[arg(long)]
        relay: Option<String>,
        /// Accept any TLS certificate from the relay (test relays only).
        #[arg(long)]
        insecure: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DnsCmd {
    /// Print the records to publish, each with a one-line reason.
    ///
    /// Built from sending.from (SPF, DMARC), [dkim] (the public key of the
    /// configured private key) and sending.bounce_domain (MX and SPF of the
    /// VERP return-path domain, which is the domain SPF checks). The text
    /// output is zone-file lines you can paste; --json prints
    /// {"records":[{"name":…,"type":"TXT|MX","value":…,"why":…}]}. Values
    /// in <angle brackets> are placeholders: pass --spf and --mx-host to fill
    /// them in. See docs/deliverability.md.
    Records(DnsRecordsArgs),
}

#[derive(Debug, Args)]
pub struct DnsRecordsArgs {
    /// SPF mechanisms that authorise your relay, e.g.
    /// 'include:_spf.relay.example' or 'ip4:203.0.113.5'. Default: `a:` of
    /// the configured relay's host, or a placeholder without a relay.
    #[arg(long, value_name = "MECHANISMS")]
    pub spf: Option<String>,
    /// Public host name of the machine running `rundbrief bounce serve` on
    /// port 25: the bounce domain's MX. Default: a placeholder.
    #[arg(long, value_name = "HOST")]
    pub mx_host: Option<String>,
    /// Where receivers send DMARC aggregate reports (rua=). Default:
    /// dmarc-reports@ the From domain; the mailbox must exist.
    #[arg(long, value_name = "ADDRESS")]
    pub dmarc_rua: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DkimCmd {
    /// Write a new DKIM private key (PEM, readable by you only) and print
    /// the [dkim] settings and the DNS record for it.
    ///
    /// RSA 2048 is the default because every receiver verifies it; Ed25519
    /// (RFC 8463) is shorter but not checked everywhere yet, so use it as a
    /// second selector, not alone. For key rotation, generate a key under a
    /// new selector, publish its record, wait for DNS, then switch
    /// dkim.key_file and dkim.selector (docs/deliverability.md).
    Keygen {
        /// Where to write the private key; an existing file is kept unless --force.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// The selector to print in the suggested settings (default:
        /// rb<year><month>, e.g. rb202611).
        #[arg(long)]
        selector: Option<String>,
        /// Key type.
        #[arg(long, value_enum, default_value_t = DkimAlgorithm::Rsa)]
        algorithm: DkimAlgorithm,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DkimAlgorithm {
    /// RSA 2048, rsa-sha256.
    Rsa,
    /// Ed25519, ed25519-sha256 (RFC 8463).
    Ed25519,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Relay for campaigns that name none: a [relays.NAME] or a URL (overrides RUNDBRIEF_RELAY).
    #[arg(long)]
    pub relay: Option<String>,
    /// SMTP connections per running campaign (default: the relay's pool_size).
    #[arg(long)]
    pub pool: Option<usize>,
    /// The bounce endpoint's address (port 25 in production); `off` to run
    /// without it.
    #[arg(long, default_value = "127.0.0.1:2525", value_name = "ADDR|off")]
    pub bounce_listen: String,
    /// The HTTP endpoint's address (unsubscribe, opt-in); `off` to run without it.
    #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR|off")]
    pub http_listen: String,
    /// Prometheus metrics at http://ADDR/metrics; `off` to disable. Keep it
    /// on loopback or behind a firewall.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR|off")]
    pub metrics_listen: String,
    /// Seconds between two looks at the schedules.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    pub tick: u64,
    /// Accept any TLS certificate from the relay (test relays only).
    #[arg(long)]
    pub insecure: bool,
    /// The admin dashboard and API (as `rundbrief admin serve`); `off` (the
    /// default) runs without it. Never the public HTTP endpoint's port; a
    /// non-loopback address needs --insecure-admin (docs/dashboard.md).
    #[arg(long, default_value = "off", value_name = "ADDR|off")]
    pub admin_listen: String,
    /// Serve the dashboard on a non-loopback address although it speaks plain HTTP.
    #[arg(long)]
    pub insecure_admin: bool,
    /// Mark the dashboard's session cookie Secure (behind a TLS proxy).
    #[arg(long)]
    pub secure_cookies: bool,
    /// Skip the recipient-domain check before each campaign pass (as
    /// `[dns] check = false` does).
    #[arg(long)]
    pub no_dns_check: bool,
}

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Admin users of the dashboard.
    #[command(subcommand)]
    User(AdminUserCmd),
    /// API keys for /api/v1.
    #[command(subcommand)]
    Key(AdminKeyCmd),
    /// Serve the dashboard and the API (see docs/dashboard.md).
    ///
    /// Pages need a login (`admin user add`), the API an
    /// `Authorization: Bearer KEY` (`admin key create`). Loopback only unless
    /// --insecure-admin: put a reverse proxy that terminates TLS in front of
    /// it and pass --secure-cookies. Port 0 picks a free port (printed on
    /// stderr). Ctrl-C/SIGTERM finish requests in flight.
    Serve {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8025")]
        listen: std::net::SocketAddr,
        /// Allow an address other than loopback (the dashboard speaks plain HTTP).
        #[arg(long)]
        insecure_admin: bool,
        /// Mark cookies Secure and send HSTS: the dashboard is reached over HTTPS.
        #[arg(long)]
        secure_cookies: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminUserCmd {
    /// Add an admin user; the password is read from stdin (one line, at
    /// least 12 characters) and stored as an argon2id hash.
    Add {
        name: String,
        /// Read the password from stdin (required: never from a flag).
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminKeyCmd {
    /// Create an API key and print it once (only its SHA-256 is stored).
    ///
    /// --json prints {"name", "scope", "key"}.
    Create {
        name: String,
        /// read: GET only; write: also pause and resume.
        #[arg(long, value_parser = ["read", "write"])]
        scope: String,
    },
}
