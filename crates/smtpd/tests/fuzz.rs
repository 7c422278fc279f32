//! Time-bounded fuzzing (issue #21), not part of the normal test run: both
//! tests are `#[ignore]`d and driven by `scripts/fuzz.sh`, which sets
//! `RUNDBRIEF_FUZZ_SECS` (default 10 per target) and prints, per target, the
//! inputs tried, the crashes found (each saved under
//! `target/fuzz-crashes/`) and the slowest input.
//!
//! - the SMTP session state machine, fed through smtp-proto's request
//!   receiver exactly as a connection feeds it, with random handler
//!   decisions, checking that every reply is a real SMTP reply, that the
//!   recipient limit holds, and that a session past its error budget is
//!   closed;
//! - the bounce parser (`rundbrief_bounce::parse`) on mutations of every
//!   fixture in `crates/bounce/tests/fixtures` (byte flips, cuts, inserted
//!   MIME and DSN fragments, LF/CRLF changes) and on arbitrary bytes.

use std::cell::{Cell, RefCell};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use rundbrief_smtpd::{
    DataDecision, Decision, Limits, Reply, ServerConfig, Session, SessionInfo, Step,
};
use smtp_proto::request::receiver::RequestReceiver;

const MAX_RECIPIENTS: usize = 5;
const MAX_ERRORS: u32 = 10;
const MAX_JUNK: u32 = 20;

fn budget() -> Duration {
    Duration::from_secs(
        std::env::var("RUNDBRIEF_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(10),
    )
}

/// Tried, crashed, slowest: what each target reports.
#[derive(Default)]
struct Tally {
    tried: Cell<u64>,
    crashes: RefCell<Vec<PathBuf>>,
    slowest: Cell<(Duration, usize)>,
}

impl Tally {
    /// Runs `f` on `input`, counting it, timing it and keeping a panic's
    /// input as a file (the panic message goes to stderr as usual).
    fn run(&self, target: &str, input: &[u8], f: impl FnOnce()) {
        self.tried.set(self.tried.get() + 1);
        let t = Instant::now();
        let ok = catch_unwind(AssertUnwindSafe(f)).is_ok();
        let took = t.elapsed();
        if took > self.slowest.get().0 {
            self.slowest.set((took, input.len()));
        }
        if !ok {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/fuzz-crashes")
                .join(target);
            let _ = std::fs::create_dir_all(&dir);
            let path = dir.join(format!("crash-{}.bin", self.crashes.borrow().len()));
            let _ = std::fs::write(&path, input);
            self.crashes.borrow_mut().push(path);
        }
    }

    fn report(&self, target: &str, secs: Duration) {
        let (slow, len) = self.slowest.get();
        println!(
            "fuzz {target}: {} inputs in {:.0} s ({:.0}/s), {} crash(es), slowest {:.2} ms ({len} bytes)",
            self.tried.get(),
            secs.as_secs_f64(),
            self.tried.get() as f64 / secs.as_secs_f64(),
            self.crashes.borrow().len(),
            slow.as_secs_f64() * 1000.0,
        );
        for p in self.crashes.borrow().iter() {
            println!("  crash input: {}", p.display());
        }
    }
}

/// Runs fresh cases of `strategy` through `test` until the time budget is
/// spent (a proptest runner keeps its random stream across batches).
fn for_a_while<S: Strategy>(strategy: S, mut test: impl FnMut(S::Value)) -> Duration {
    let start = Instant::now();
    let deadline = start + budget();
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    while Instant::now() < deadline {
        for _ in 0..256 {
            let tree = strategy
                .new_tree(&mut runner)
                .expect("strategies here never reject");
            test(tree.current());
        }
    }
    start.elapsed()
}

fn session() -> Session {
    let info = SessionInfo {
        id: 1,
        peer: "127.0.0.1:1".parse().expect("literal"),
        local: "127.0.0.1:2".parse().expect("literal"),
        helo: None,
        tls: false,
        messages: 0,
    };
    let cfg = ServerConfig {
        limits: Limits {
            max_recipients: MAX_RECIPIENTS,
            max_errors: MAX_ERRORS,
            max_junk_commands: MAX_JUNK,
            ..Limits::default()
        },
        ..ServerConfig::default()
    };
    Session::new(info, &cfg, true)
}

fn check(reply: &Reply) {
    assert!(
        (200..=599).contains(&reply.code()),
        "not an SMTP reply code: {}",
        reply.code()
    );
    assert!(!reply.to_wire().is_empty());
}

/// Drives a session over `input` the way a connection does. Panics when an
/// invariant breaks.
fn drive(input: &[u8], decisions: &[u8]) {
    let mut s = session();
    let mut receiver = RequestReceiver::default();
    let mut decide = decisions.iter().cycle();
    for line in input.split_inclusive(|&b| b == b'\n').take(400) {
        let mut iter = line.iter();
        let mut step = match receiver
            .ingest(&mut iter)
            .map(smtp_proto::Request::into_owned)
        {
            Ok(req) => s.on_request(req),
            Err(smtp_proto::Error::NeedsMoreData { .. }) => continue,
            Err(e) => {
                receiver = RequestReceiver::default();
                s.on_parse_error(&e)
            }
        };
        loop {
            step = match step {
                Step::Reply(r) => {
                    check(&r);
                    break;
                }
                Step::Close(_) => return,
                Step::AskMail(from) => {
                    let d = *decide.next().unwrap_or(&0);
                    s.mail_decided(from, decision(d))
                }
                Step::AskRcpt(rcpt) => {
                    let d = *decide.next().unwrap_or(&0);
                    let next = s.rcpt_decided(rcpt, decision(d));
                    assert!(s.envelope().recipients.len() <= MAX_RECIPIENTS);
                    next
                }
                Step::ReceiveData(r) => {
                    check(&r);
                    let d = *decide.next().unwrap_or(&0);
                    if d.is_multiple_of(3) {
                        s.data_received(DataDecision::accept())
                    } else if d % 3 == 1 {
                        s.data_too_big()
                    } else {
                        s.data_received(DataDecision::Reject(Reply::new(554, None, "no")))
                    }
                }
                Step::StartTls(r) => {
                    check(&r);
                    s.tls_started();
                    receiver = RequestReceiver::default();
                    break;
                }
                Step::SkipChunk { reply, .. } => {
                    check(&reply);
                    break;
                }
            };
        }
        // Past the error budget the session has closed (returned above).
        assert!(
            s.errors() <= MAX_ERRORS,
            "{} errors and still open",
            s.errors()
        );
    }
}

fn decision(d: u8) -> Decision {
    match d % 4 {
        0 | 1 => Decision::Accept,
        2 => Decision::Reject(Reply::new(550, None, "no")),
        _ => Decision::Reject(Reply::new(421, None, "go away")),
    }
}

fn command() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO client.example\r\n".to_vec()),
        Just(b"HELO client.example\r\n".to_vec()),
        "[a-z0-9.]{0,20}@[a-z0-9.]{0,20}"
            .prop_map(|a| format!("MAIL FROM:<{a}> SIZE=1000 BODY=8BITMIME\r\n").into_bytes()),
        Just(b"MAIL FROM:<> RET=HDRS ENVID=x\r\n".to_vec()),
        "[a-z0-9.+-]{0,20}@[a-z0-9.]{0,20}"
            .prop_map(
                |a| format!("RCPT TO:<{a}> NOTIFY=FAILURE ORCPT=rfc822;{a}\r\n").into_bytes()
            ),
        Just(b"DATA\r\n".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"NOOP\r\n".to_vec()),
        Just(b"STARTTLS\r\n".to_vec()),
        Just(b"BDAT 10 LAST\r\n".to_vec()),
        Just(b"VRFY x\r\n".to_vec()),
        Just(b"HELP\r\n".to_vec()),
        Just(b"AUTH PLAIN AHVzZXIAcGFzcw==\r\n".to_vec()),
        Just(b"QUIT\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..300),
        "[ -~]{0,700}".prop_map(|l| format!("{l}\r\n").into_bytes()),
        "[ -~]{0,40}".prop_map(|l| format!("{l}\n").into_bytes()),
    ]
}

#[test]
#[ignore = "time-bounded fuzzing: run scripts/fuzz.sh"]
fn fuzz_smtp_session() {
    let tally = Tally::default();
    let strategy = (
        proptest::collection::vec(command(), 0..80),
        proptest::collection::vec(any::<u8>(), 1..16),
    );
    let took = for_a_while(strategy, |(cmds, decisions)| {
        let input = cmds.concat();
        tally.run("smtp-session", &input, || drive(&input, &decisions));
    });
    tally.report("smtp-session", took);
    assert!(tally.crashes.borrow().is_empty(), "crashes found");
}

/// Every `.eml` under the bounce crate's fixtures.
fn corpus() -> Vec<Vec<u8>> {
    fn walk(dir: &std::path::Path, out: &mut Vec<Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "eml")
                && let Ok(b) = std::fs::read(&p)
            {
                out.push(b);
            }
        }
    }
    let mut out = Vec::new();
    walk(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bounce/tests/fixtures"),
        &mut out,
    );
    assert!(!out.is_empty(), "no bounce fixtures found");
    out
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Repeat(usize, usize, u8),
    LineEndings,
}

/// Fragments a bounce parser meets: MIME and DSN syntax, encodings.
const FRAGMENTS: &[&[u8]] = &[
    b"\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b\"\r\n",
    b"\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\n",
    b"\r\n--b--\r\n",
    b"Final-Recipient: rfc822; x@example.org\r\nAction: failed\r\nStatus: 5.1.1\r\n",
    b"Diagnostic-Code: smtp; 550 5.1.1 <x@example.org>: user unknown\r\n",
    b"\r\nContent-Type: message/rfc822\r\n\r\n",
    b"\r\nContent-Transfer-Encoding: base64\r\n\r\n",
    b"=?utf-8?b?w7w=?=",
    b"\r\n\r\n",
    b"Content-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\n",
    b"\r\n\t",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (
            any::<usize>(),
            prop_oneof![
                (0..FRAGMENTS.len()).prop_map(|i| FRAGMENTS[i].to_vec()),
                proptest::collection::vec(any::<u8>(), 0..64),
            ]
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..200, 1u8..50).prop_map(|(i, l, n)| Mutation::Repeat(i, l, n)),
        Just(Mutation::LineEndings),
    ]
}

fn apply(mut b: Vec<u8>, m: &Mutation) -> Vec<u8> {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match m {
        Mutation::Flip(i, x) if !b.is_empty() => {
            let i = i % b.len();
            b[i] ^= x | 1;
        }
        Mutation::Flip(..) => {}
        Mutation::Cut(i) => b.truncate(at(*i, b.len())),
        Mutation::Insert(i, v) => {
            let i = at(*i, b.len());
            b.splice(i..i, v.iter().copied());
        }
        Mutation::Repeat(i, len, n) => {
            let i = at(*i, b.len());
            let end = (i + len).min(b.len());
            let piece = b[i..end].to_vec();
            for _ in 0..*n {
                b.splice(end..end, piece.iter().copied());
            }
        }
        Mutation::LineEndings => {
            if b.windows(2).any(|w| w == b"\r\n") {
                b.retain(|&c| c != b'\r');
            } else {
                b = b
                    .iter()
                    .flat_map(|&c| {
                        if c == b'\n' {
                            vec![b'\r', b'\n']
                        } else {
                            vec![c]
                        }
                    })
                    .collect();
            }
        }
    }
    b
}

#[test]
#[ignore = "time-bounded fuzzing: run scripts/fuzz.sh"]
fn fuzz_bounce_parser() {
    let seeds = corpus();
    let n = seeds.len();
    let tally = Tally::default();
    let strategy = prop_oneof![
        4 => (0..n, proptest::collection::vec(mutation(), 1..6)).prop_map(|(i, ms)| (Some(i), ms, Vec::new())),
        1 => proptest::collection::vec(any::<u8>(), 0..4096).prop_map(|raw| (None, Vec::new(), raw)),
    ];
    let took = for_a_while(strategy, |(seed, ms, raw)| {
        let input = match seed {
            Some(i) => ms.iter().fold(seeds[i].clone(), apply),
            None => raw,
        };
        tally.run("bounce-parse", &input, || {
            let parsed = rundbrief_bounce::parse(&input);
            assert!(!format!("{parsed:?}").is_empty());
        });
    });
    println!("fuzz bounce-parse: {n} seed fixtures");
    tally.report("bounce-parse", took);
    assert!(tally.crashes.borrow().is_empty(), "crashes found");
}
