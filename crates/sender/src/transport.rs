//! The seam between the campaign runner and SMTP: [`Transport`] sends one
//! delivery and says how it ended. [`Sender`](crate::Sender) is the real
//! one (a pool of SMTP connections); [`StubTransport`] answers from a rule
//! in memory, so the runner, retries and the bounce policy are tested in
//! their own crates without a socket (lettre's `StubTransport` is the model).

use crate::error::{Outcome, Reply, SendError, SmtpStep};
use crate::pool::Delivery;
use std::sync::{Mutex, PoisonError};

/// Sends deliveries. Never panics: every failure is an [`Outcome`] naming its step.
#[async_trait::async_trait]
pub trait Transport: Send + Sync {
    /// Sends one delivery.
    async fn send(&self, delivery: Delivery) -> Outcome;
    /// Waits for sends in flight and closes connections; later sends fail
    /// with [`SendError::Shutdown`].
    async fn shutdown(&self);
}

#[async_trait::async_trait]
impl Transport for crate::Sender {
    async fn send(&self, delivery: Delivery) -> Outcome {
        crate::Sender::send(self, delivery).await
    }
    async fn shutdown(&self) {
        crate::Sender::shutdown(self).await;
    }
}

type Rule = Box<dyn Fn(&Delivery) -> Outcome + Send + Sync>;

/// An in-memory transport: each delivery gets the outcome `rule` gives it,
/// and is kept (see [`StubTransport::sent`]).
pub struct StubTransport {
    rule: Rule,
    seen: Mutex<Vec<(Delivery, &'static str)>>,
    closed: std::sync::atomic::AtomicBool,
}

impl StubTransport {
    /// Every delivery is sent (250).
    pub fn accepting() -> Self {
        Self::with_rule(|_| Outcome::Sent {
            reply: Reply::new(250, "2.0.0 queued by the stub"),
        })
    }

    /// Each delivery's outcome is `rule(delivery)`.
    pub fn with_rule(rule: impl Fn(&Delivery) -> Outcome + Send + Sync + 'static) -> Self {
        StubTransport {
            rule: Box::new(rule),
            seen: Mutex::new(Vec::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// A refusal at `step` with the reply `code text` (e.g. `550`,
    /// `5.1.1 User unknown`): `Rejected` for 5xx at RCPT/DATA, `Deferred`
    /// for 4xx, `Failed` for 5xx elsewhere, as the real sender classifies.
    pub fn refusal(step: SmtpStep, code: u16, text: &str) -> Outcome {
        let error = SendError::Refused {
            step,
            host: "stub".into(),
            reply: Reply::new(code, text),
        };
        match (code / 100, step) {
            (4, _) => Outcome::Deferred { error },
            (5, SmtpStep::Rcpt | SmtpStep::Data) => Outcome::Rejected { error },
            _ => Outcome::Failed { error },
        }
    }

    /// Every delivery handed over so far with its outcome word, in order.
    pub fn sent(&self) -> Vec<(Delivery, &'static str)> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[async_trait::async_trait]
impl Transport for StubTransport {
    async fn send(&self, delivery: Delivery) -> Outcome {
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Outcome::Failed {
                error: SendError::Shutdown,
            };
        }
        let outcome = (self.rule)(&delivery);
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((delivery, outcome.as_str()));
        outcome
    }
    async fn shutdown(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn the_stub_answers_by_rule_and_keeps_what_it_saw() {
        let stub = StubTransport::with_rule(|d| {
            if d.to.starts_with("dead") {
                StubTransport::refusal(SmtpStep::Rcpt, 550, "5.1.1 User unknown")
            } else {
                StubTransport::refusal(SmtpStep::Rcpt, 450, "4.2.0 Greylisted")
            }
        });
        let t: &dyn Transport = &stub;
        let d = |to: &str| Delivery {
            id: uuid::Uuid::now_v7(),
            to: to.into(),
            message: Arc::from(b"x".to_vec()),
            per_connection: None,
        };
        let o = t.send(d("dead@example.org")).await;
        assert_eq!(o.as_str(), "rejected");
        assert_eq!(o.error().and_then(|e| e.reply()).map(|r| r.code), Some(550));
        assert_eq!(t.send(d("grey@example.org")).await.as_str(), "deferred");
        t.shutdown().await;
        assert_eq!(t.send(d("late@example.org")).await.as_str(), "failed");
        let seen: Vec<_> = stub.sent().into_iter().map(|(d, o)| (d.to, o)).collect();
        assert_eq!(
            seen,
            vec![
                ("dead@example.org".to_string(), "rejected"),
                ("grey@example.org".to_string(), "deferred")
            ]
        );
    }
}
