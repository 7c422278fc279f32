//! A small authoritative DNS server on loopback, for tests, the demo and
//! the benchmark: never a resolver for real traffic.
//!
//! It answers UDP and TCP on one port from records set through its methods
//! (MX, A, AAAA), answers NXDOMAIN with an SOA (whose minimum is the
//! negative TTL) for names it does not know and NODATA for known names
//! without records of the asked type, and can be told to fail for a name
//! ([`Fault`]: SERVFAIL, REFUSED, silence, or a truncated UDP answer that
//! sends the client to TCP). It counts the queries it answered.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use rundbrief_dns::responder::Responder;
//! let dns = Responder::start().await?;
//! dns.mx("example.org", 300, &[(10, "mx.example.org")]);
//! dns.mx("nomail.example", 300, &[(0, ".")]); // null MX
//! // [dns] servers = [dns.addr().to_string()]
//! # Ok(()) }
//! ```

use hickory_resolver::proto::op::{Message, MessageType, ResponseCode};
use hickory_resolver::proto::rr::rdata::{A, AAAA, CNAME, MX, SOA};
use hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};

/// How the responder misbehaves for one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer SERVFAIL (a broken zone).
    ServFail,
    /// Answer REFUSED (a zone this server will not serve).
    Refused,
    /// Never answer (the client times out).
    Silent,
    /// Over UDP answer with the TC bit and no records; over TCP answer
    /// normally (tests the client's TCP fallback).
    TruncateUdp,
}

#[derive(Default)]
struct Node {
    records: Vec<Record>,
    fault: Option<Fault>,
}

struct State {
    names: RwLock<HashMap<String, Node>>,
    negative_ttl: AtomicU32,
    udp_queries: AtomicU64,
    tcp_queries: AtomicU64,
}

/// A running responder; it stops when dropped.
pub struct Responder {
    addr: SocketAddr,
    state: Arc<State>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Responder {
    /// Starts on `127.0.0.1` with a free port, UDP and TCP on the same
    /// port.
    ///
    /// # Errors
    /// When no port free for both UDP and TCP was found in 20 tries.
    pub async fn start() -> io::Result<Self> {
        let mut last = None;
        for _ in 0..20 {
            let udp = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?;
            let addr = udp.local_addr()?;
            match TcpListener::bind(addr).await {
                Ok(tcp) => return Ok(Self::run(udp, tcp)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("no free port")))
    }

    /// Starts on `addr` (UDP and TCP), e.g. `127.0.0.1:5300`.
    ///
    /// # Errors
    /// When either socket cannot be bound.
    pub async fn bind(addr: SocketAddr) -> io::Result<Self> {
        let udp = UdpSocket::bind(addr).await?;
        let tcp = TcpListener::bind(udp.local_addr()?).await?;
        Ok(Self::run(udp, tcp))
    }

    fn run(udp: UdpSocket, tcp: TcpListener) -> Self {
        let addr = udp.local_addr().expect("a bound socket has an address");
        let state = Arc::new(State {
            names: RwLock::new(HashMap::new()),
            negative_ttl: AtomicU32::new(300),
            udp_queries: AtomicU64::new(0),
            tcp_queries: AtomicU64::new(0),
        });
        let s = state.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                    continue;
                };
                s.udp_queries.fetch_add(1, Ordering::Relaxed);
                if let Some(reply) = s.answer(&buf[..n], false) {
                    let _ = udp.send_to(&reply, peer).await;
                }
            }
        });
        let s = state.clone();
        let tcp_task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) ends every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = tcp.accept() => {
                        if let Ok((stream, _)) = accepted {
                            conns.spawn(serve_tcp(stream, s.clone()));
                        }
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Responder {
            addr,
            state,
            tasks: vec![udp_task, tcp_task],
        }
    }

    /// Where it listens: put it in `[dns] servers`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queries received over UDP so far.
    pub fn udp_queries(&self) -> u64 {
        self.state.udp_queries.load(Ordering::Relaxed)
    }

    /// Queries received over TCP so far.
    pub fn tcp_queries(&self) -> u64 {
        self.state.tcp_queries.load(Ordering::Relaxed)
    }

    /// Queries received over both.
    pub fn queries(&self) -> u64 {
        self.udp_queries() + self.tcp_queries()
    }

    /// The TTL (and SOA minimum) of negative answers. Default 300.
    pub fn set_negative_ttl(&self, secs: u32) {
        self.state.negative_ttl.store(secs, Ordering::Relaxed);
    }

    /// Replaces the MX records of `domain`: (preference, host); host `.` is
    /// the root, so `&[(0, ".")]` is a null MX.
    pub fn mx(&self, domain: &str, ttl: u32, hosts: &[(u16, &str)]) {
        let owner = fqdn(domain);
        let records = hosts
            .iter()
            .map(|(pref, host)| {
                let exchange = if *host == "." {
                    Name::root()
                } else {
                    fqdn(host)
                };
                Record::from_rdata(owner.clone(), ttl, RData::MX(MX::new(*pref, exchange)))
            })
            .collect();
        self.replace(domain, RecordType::MX, records);
    }

    /// Replaces the A records of `domain`.
    pub fn a(&self, domain: &str, ttl: u32, addrs: &[Ipv4Addr]) {
        let owner = fqdn(domain);
        let records = addrs
            .iter()
            .map(|a| Record::from_rdata(owner.clone(), ttl, RData::A(A(*a))))
            .collect();
        self.replace(domain, RecordType::A, records);
    }

    /// Replaces the AAAA records of `domain`.
    pub fn aaaa(&self, domain: &str, ttl: u32, addrs: &[Ipv6Addr]) {
        let owner = fqdn(domain);
        let records = addrs
            .iter()
            .map(|a| Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(*a))))
            .collect();
        self.replace(domain, RecordType::AAAA, records);
    }

    /// Makes `domain` an alias of `target`: queries for any other type get
    /// the CNAME and, when this responder knows `target`, its records.
    pub fn cname(&self, domain: &str, ttl: u32, target: &str) {
        let record = Record::from_rdata(fqdn(domain), ttl, RData::CNAME(CNAME(fqdn(target))));
        self.replace(domain, RecordType::CNAME, vec![record]);
    }

    /// Makes `domain` exist without records (NODATA for every type).
    pub fn exists(&self, domain: &str) {
        self.with_names(|names| {
            names.entry(key(domain)).or_default();
        });
    }

    /// Makes `domain` misbehave (or behave again, with `None`).
    pub fn fault(&self, domain: &str, fault: Option<Fault>) {
        self.with_names(|names| names.entry(key(domain)).or_default().fault = fault);
    }

    /// Forgets `domain`: it answers NXDOMAIN from now on.
    pub fn remove(&self, domain: &str) {
        self.with_names(|names| {
            names.remove(&key(domain));
        });
    }

    fn replace(&self, domain: &str, rtype: RecordType, records: Vec<Record>) {
        self.with_names(|names| {
            let node = names.entry(key(domain)).or_default();
            node.records.retain(|r| r.record_type() != rtype);
            node.records.extend(records);
        });
    }

    fn with_names(&self, f: impl FnOnce(&mut HashMap<String, Node>)) {
        let mut names = self.state.names.write().unwrap_or_else(|e| e.into_inner());
        f(&mut names);
    }
}

async fn serve_tcp(mut stream: TcpStream, state: Arc<State>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 65535];
    loop {
        let Ok(len) = stream.read_u16().await else {
            return;
        };
        let len = usize::from(len);
        if stream.read_exact(&mut buf[..len]).await.is_err() {
            return;
        }
        state.tcp_queries.fetch_add(1, Ordering::Relaxed);
        if let Some(reply) = state.answer(&buf[..len], true) {
            let Ok(n) = u16::try_from(reply.len()) else {
                return;
            };
            let mut framed = Vec::with_capacity(reply.len() + 2);
            framed.extend_from_slice(&n.to_be_bytes());
            framed.extend_from_slice(&reply);
            if stream.write_all(&framed).await.is_err() {
                return;
            }
        }
    }
}

impl State {
    /// The reply to one query, or `None` to stay silent.
    fn answer(&self, query: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let req = Message::from_vec(query).ok()?;
        if req.metadata.message_type != MessageType::Query {
            return None;
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = true;
        resp.metadata.authoritative = true;
        resp.add_queries(req.queries.iter().cloned());
        let Some(q) = req.queries.first() else {
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp.to_vec().ok();
        };
        let name = key(&q.name().to_ascii());
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        match names.get(&name) {
            None => {
                resp.metadata.response_code = ResponseCode::NXDomain;
                resp.add_authority(self.soa(&name));
            }
            Some(node) => match node.fault {
                Some(Fault::ServFail) => resp.metadata.response_code = ResponseCode::ServFail,
                Some(Fault::Refused) => resp.metadata.response_code = ResponseCode::Refused,
                Some(Fault::Silent) => return None,
                Some(Fault::TruncateUdp) if !tcp => resp.metadata.truncation = true,
                Some(Fault::TruncateUdp) | None => {
                    let of_type = |n: &Node| -> Vec<Record> {
                        n.records
                            .iter()
                            .filter(|r| r.record_type() == q.query_type())
                            .cloned()
                            .collect()
                    };
                    let mut hits = of_type(node);
                    let alias = node
                        .records
                        .iter()
                        .find(|r| r.record_type() == RecordType::CNAME);
                    if let (true, Some(alias)) = (hits.is_empty(), alias) {
                        hits.push(alias.clone());
                        if let RData::CNAME(CNAME(target)) = &alias.data
                            && let Some(t) = names.get(&key(&target.to_ascii()))
                        {
                            hits.extend(of_type(t));
                        }
                    }
                    if hits.is_empty() {
                        resp.add_authority(self.soa(&name));
                    } else {
                        resp.add_answers(hits);
                    }
                }
            },
        }
        resp.to_vec().ok()
    }

    /// The SOA of a negative answer: owned by the name's last label, TTL
    /// and minimum both the negative TTL (RFC 2308 takes the smaller).
    fn soa(&self, name: &str) -> Record {
        let ttl = self.negative_ttl.load(Ordering::Relaxed);
        let apex = fqdn(name.rsplit('.').next().unwrap_or(name));
        let soa = SOA::new(
            fqdn("ns.responder.example"),
            fqdn("hostmaster.responder.example"),
            1,
            3600,
            600,
            86400,
            ttl,
        );
        Record::from_rdata(apex, ttl, RData::SOA(soa))
    }
}

/// A name as the responder keys it.
fn key(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// `domain` as a fully qualified name; an unusable one becomes the root (a
/// test fixture, so garbage in shows up as a wrong answer, not a panic).
fn fqdn(domain: &str) -> Name {
    Name::from_ascii(format!("{}.", key(domain))).unwrap_or_else(|_| Name::root())
}
