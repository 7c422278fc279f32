//! One error type for every service: what kind of failure it is (so the
//! CLI picks a hint and HTTP a status code) and why, with its cause.
//!
//! Messages say what was wrong in the service's words; hints about command
//! line flags belong to the CLI, which maps [`ErrorKind`] and the cause.

use std::fmt;

/// What kind of failure an [`AppError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The thing named does not exist (HTTP 404).
    NotFound,
    /// It exists, but its state does not allow this (HTTP 409).
    Conflict,
    /// The request itself is wrong: bad input or configuration (HTTP 400/422).
    Invalid,
    /// Something we depend on failed: database, relay, file system (HTTP 503).
    Unavailable,
}

impl ErrorKind {
    /// The HTTP status code a front end answers with.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::NotFound => 404,
            ErrorKind::Conflict => 409,
            ErrorKind::Invalid => 422,
            ErrorKind::Unavailable => 503,
        }
    }
}

/// Why a service refused, for a front end that words its own advice (the
/// CLI names the flag or command that fixes it). The message stays the
/// service's own; a front end matches on this, never on the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The campaign is paused (`resume` continues it).
    CampaignPaused,
    /// Every recipient has an outcome (`retry-failed` sends the failed again).
    CampaignFinished,
    /// The campaign was cancelled.
    CampaignCancelled,
    /// The pre-flight found problems and strict mode is on.
    PreflightStrict,
    /// The campaign's subject is empty.
    EmptySubject,
    /// No relay is configured or given.
    NoRelay,
}

/// A service failure: a kind, what we were doing (optional) and the cause.
///
/// Displayed as the context when there is one, else as the cause; the cause
/// is the `source()` only under a context, so `{:#}` chains never repeat it.
pub struct AppError {
    kind: ErrorKind,
    reason: Option<Reason>,
    context: Option<String>,
    cause: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = AppError> = std::result::Result<T, E>;

impl AppError {
    /// A failure with a message and no underlying cause.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        AppError {
            kind,
            reason: None,
            context: Some(message.into()),
            cause: None,
        }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Invalid, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Wraps `cause` as a failure of `kind`, displayed as the cause itself.
    pub fn wrap(kind: ErrorKind, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        AppError {
            kind,
            reason: None,
            context: None,
            cause: Some(Box::new(cause)),
        }
    }

    /// Says what we were doing; the old message becomes the cause.
    pub fn context(self, what: impl Into<String>) -> Self {
        let kind = self.kind;
        let reason = self.reason;
        AppError {
            kind,
            reason,
            context: Some(what.into()),
            cause: Some(Box::new(self)),
        }
    }

    /// Marks the failure with a [`Reason`] a front end can match on.
    #[must_use]
    pub fn because(mut self, reason: Reason) -> Self {
        self.reason = Some(reason);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The reason, if the service gave one (kept through [`Self::context`]).
    pub fn reason(&self) -> Option<Reason> {
        self.reason
    }

    /// The first cause of type `E` in the chain (e.g. a store error, for a
    /// front end that adds its own hint).
    pub fn find<E: std::error::Error + 'static>(&self) -> Option<&E> {
        let mut next: Option<&(dyn std::error::Error + 'static)> =
            self.cause.as_deref().map(|c| c as _);
        while let Some(e) = next {
            if let Some(found) = e.downcast_ref::<E>() {
                return Some(found);
            }
            if let Some(app) = e.downcast_ref::<AppError>() {
                next = app.cause.as_deref().map(|c| c as _);
            } else {
                next = e.source();
            }
        }
        None
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.context, &self.cause) {
            (Some(c), _) => f.write_str(c),
            (None, Some(cause)) => fmt::Display::fmt(cause, f),
            (None, None) => f.write_str("failed"),
        }
    }
}

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppError({:?}: {self}", self.kind)?;
        if let Some(c) = std::error::Error::source(self) {
            write!(f, ": {c}")?;
        }
        f.write_str(")")
    }
}

impl std::error::Error for AppError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match (&self.context, &self.cause) {
            (Some(_), Some(c)) => Some(c.as_ref()),
            // Displayed as the cause: its source is the next link.
            (None, Some(c)) => c.source(),
            _ => None,
        }
    }
}

/// Adds context to any result whose error converts into an [`AppError`].
pub trait ResultExt<T> {
    /// On error, says what we were doing.
    fn context(self, what: impl Into<String>) -> Result<T>;
    /// On error, says what we were doing, computed only then.
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<AppError>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, what: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.into().context(what))
    }
    fn with_context<S: Into<String>>(self, what: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| e.into().context(what()))
    }
}

impl From<rundbrief_store::StoreError> for AppError {
    fn from(e: rundbrief_store::StoreError) -> Self {
        use rundbrief_store::StoreError as S;
        let kind = match &e {
            S::ListNotFound(_)
            | S::SubscriberNotFound(_)
            | S::CampaignNotFound(_)
            | S::BounceNotFound(_)
            | S::NotAMember { .. } => ErrorKind::NotFound,
            S::ListExists(_)
            | S::CampaignExists(_)
            | S::ListNotEmpty { .. }
            | S::ListInUse { .. }
            | S::Blocklisted(_)
            | S::Inactive { .. }
            | S::IllegalTransition { .. }
            | S::NotADraft { .. }
            | S::NotBounced { .. } => ErrorKind::Conflict,
            S::StatusNeedsList(_) => ErrorKind::Invalid,
            _ => ErrorKind::Unavailable,
        };
        AppError::wrap(kind, e)
    }
}

macro_rules! wrap_as {
    ($kind:ident: $($t:ty),+ $(,)?) => {
        $(impl From<$t> for AppError {
            fn from(e: $t) -> Self {
                AppError::wrap(ErrorKind::$kind, e)
            }
        })+
    };
}

wrap_as!(Invalid:
    rundbrief_core::ConfigError,
    rundbrief_core::AddressError,
    rundbrief_render::RenderError,
    rundbrief_scheduler::ScheduleError,
    rundbrief_sender::RelayError,
    rundbrief_dkim::DkimError,
);
wrap_as!(Unavailable:
    std::io::Error,
    rundbrief_scheduler::RunError,
    rundbrief_sender::SenderError,
    rundbrief_smtpd::SmtpdError,
    serde_json::Error,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_never_repeat_their_cause() {
        let e: AppError = rundbrief_store::StoreError::CampaignNotFound("x".into()).into();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        let once = e.to_string();
        assert!(std::error::Error::source(&e).is_none(), "{once}");
        let e = e.context("sending `x`");
        let chain: Vec<String> =
            std::iter::successors(Some(&e as &(dyn std::error::Error + 'static)), |e| {
                e.source()
            })
            .map(ToString::to_string)
            .collect();
        assert_eq!(chain, vec!["sending `x`".to_string(), once]);
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.find::<rundbrief_store::StoreError>().is_some());
    }

    #[test]
    fn the_reason_survives_added_context() {
        let e = AppError::conflict("campaign `x` is paused").because(Reason::CampaignPaused);
        assert_eq!(e.reason(), Some(Reason::CampaignPaused));
        let e = e.context("sending `x`");
        assert_eq!(e.reason(), Some(Reason::CampaignPaused));
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert_eq!(AppError::invalid("x").reason(), None);
    }
}
