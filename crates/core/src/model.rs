//! Domain types and the statuses that drive who gets mail.
//!
//! Eligibility for a campaign is decided by two statuses together: the
//! subscriber's own [`SubscriberStatus`] (global) and the
//! [`MembershipStatus`] on the list. Only `active` + `subscribed` receives.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Free-form subscriber attributes (CSV columns other than `email` and `name`).
pub type Attributes = serde_json::Map<String, serde_json::Value>;

/// Declares a string-backed status enum: `as_str`, `FromStr` (naming the
/// accepted values on error), `Display` and serde with the same lower-case words.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "kebab-case")]
        pub enum $name { $($(#[$vmeta])* #[serde(rename = $text)] $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// The stored and printed word.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl std::str::FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let wanted = s.trim().to_ascii_lowercase();
                $name::ALL.iter().copied().find(|v| v.as_str() == wanted).ok_or_else(|| UnknownValue {
                    what: stringify!($name),
                    given: s.to_string(),
                    expected: $name::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", "),
                })
            }
        }
    };
}

/// A word that is not one of a status enum's values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{given}` is not a valid {what}; expected one of: {expected}")]
pub struct UnknownValue {
    pub what: &'static str,
    pub given: String,
    pub expected: String,
}

string_enum! {
    /// How a campaign's content is written; stored with the campaign as this word.
    ContentKind {
        /// CommonMark with tables, strikethrough and footnotes; raw HTML passes through.
        Markdown = "markdown",
        /// An HTML fragment, put into the layout as it is.
        Html = "html",
    }
}

#[allow(clippy::derivable_impls)] // the variants come from `string_enum!`
impl Default for ContentKind {
    fn default() -> Self {
        ContentKind::Markdown
    }
}

impl ContentKind {
    /// The kind a content file's extension names: `.md`/`.markdown` or
    /// `.html`/`.htm` (any case); `None` for anything else.
    pub fn from_path(path: &std::path::Path) -> Option<ContentKind> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("md" | "markdown") => Some(ContentKind::Markdown),
            Some("html" | "htm") => Some(ContentKind::Html),
            _ => None,
        }
    }
}

string_enum! {
    /// A subscriber's global status. Anything but `active` stops all mail to
    /// the address, whatever its list memberships say.
    SubscriberStatus {
        /// Receives mail on the lists where the membership is `subscribed`.
        Active = "active",
        /// Opted out of everything (global unsubscribe or a complaint).
        Unsubscribed = "unsubscribed",
        /// The address is dead (hard bounce or soft-bounce score over the threshold).
        Bounced = "bounced",
        /// Never mail this address again; imports do not bring it back.
        Blocklisted = "blocklisted",
        /// The address's domain cannot receive mail (it does not exist, has
        /// no MX and no A/AAAA, or publishes a null MX): found by the domain
        /// check at import or before a campaign. Not a bounce, and
        /// reversible (`sub restore`): DNS changes.
        Undeliverable = "undeliverable",
    }
}

string_enum! {
    /// A subscriber's status on one list.
    MembershipStatus {
        /// Receives this list's campaigns (if the subscriber is `active`).
        Subscribed = "subscribed",
        /// Waiting for double opt-in confirmation; receives nothing yet.
        Unconfirmed = "unconfirmed",
        /// Left this list.
        Unsubscribed = "unsubscribed",
    }
}

string_enum! {
    /// What happened to a subscriber, as written to the audit table.
    AuditAction {
        /// The subscriber was created.
        Created = "created",
        /// A membership became `subscribed`.
        Subscribed = "subscribed",
        /// A membership or the subscriber became `unsubscribed`.
        Unsubscribed = "unsubscribed",
        /// The subscriber was marked `bounced`.
        Bounced = "bounced",
        /// The subscriber was blocklisted.
        Blocklisted = "blocklisted",
        /// A `bounced` (or otherwise inactive) subscriber was made `active` again.
        Restored = "restored",
        /// The subscriber and their memberships were deleted.
        Removed = "removed",
        /// A membership was removed because its list was deleted.
        ListRemoved = "list-removed",
        /// The domain check found the address's domain undeliverable; the
        /// reason names the domain and what DNS said.
        Undeliverable = "undeliverable",
    }
}

string_enum! {
    /// Who or what caused a change: the first half of every audit entry.
    Actor {
        /// An operator at the command line.
        Cli = "cli",
        /// `rundbrief import`.
        Import = "import",
        /// The bounce processor.
        Bounce = "bounce",
        /// The HTTP endpoint (unsubscribe, opt-in).
        Http = "http",
        /// A message to a signed `mailto:unsub-TOKEN@…` address (the bounce endpoint).
        Mailto = "mailto",
        /// The campaign scheduler.
        Scheduler = "scheduler",
        /// An admin in the web dashboard or the API (`rundbrief admin
        /// serve`); the reason names the admin.
        Admin = "admin",
    }
}

string_enum! {
    /// A campaign's life: draft → scheduled → running ⇄ paused → finished, or cancelled.
    CampaignState {
        Draft = "draft",
        Scheduled = "scheduled",
        Running = "running",
        Paused = "paused",
        Finished = "finished",
        Cancelled = "cancelled",
    }
}

impl CampaignState {
    /// Whether a campaign may go from `self` to `to`: draft → scheduled →
    /// running ⇄ paused → finished; draft, scheduled, running and paused may
    /// be cancelled; a draft may start at once; finished and cancelled are final.
    pub fn can_become(self, to: CampaignState) -> bool {
        use CampaignState::*;
        matches!(
            (self, to),
            (Draft, Scheduled | Running | Cancelled)
                | (Scheduled, Draft | Running | Cancelled)
                | (Running, Paused | Finished | Cancelled)
                | (Paused, Running | Cancelled)
        )
    }
}

string_enum! {
    /// One recipient's delivery of one campaign.
    DeliveryState {
        /// Waiting to be sent (or to be retried).
        Pending = "pending",
        /// Claimed by a worker (leased) and being sent; returns to the pool
        /// if the worker dies before recording an outcome.
        Sending = "sending",
        /// The relay answered 250.
        Sent = "sent",
        /// A 4xx or a lost connection; retried later.
        Deferred = "deferred",
        /// A 5xx at RCPT or DATA: a synchronous bounce.
        Rejected = "rejected",
        /// Given up (our configuration, or deferred past its maximum age).
        Failed = "failed",
        /// Sent, then a bounce came back for it.
        Bounced = "bounced",
        /// Not sent: the subscriber is `undeliverable` (the domain check
        /// found their domain cannot receive mail). Final; the reason is in
        /// `last_error`.
        Skipped = "skipped",
    }
}

string_enum! {
    /// Where a stored inbound message is in its processing.
    BounceState {
        /// Stored, not parsed yet (the worker, or `bounce reprocess`, will).
        Pending = "pending",
        /// Parsed; kind, class and the parser's result are stored with it.
        Parsed = "parsed",
        /// Parsing could not finish; the error is stored, the message kept.
        Failed = "failed",
    }
}

string_enum! {
    /// How a message reached the bounce store.
    BounceSource {
        /// The inbound SMTP endpoint.
        Smtp = "smtp",
        /// `rundbrief bounce ingest` (files, mbox, stdin).
        Ingest = "ingest",
    }
}

/// The status filter of `sub ls` / `export`: the subscriber statuses plus,
/// within one list, the membership statuses. With a list, the *effective*
/// status is the subscriber's when it is not `active`, otherwise the
/// membership's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFilter {
    Subscriber(SubscriberStatus),
    Membership(MembershipStatus),
}

impl std::str::FromStr for StatusFilter {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "subscribed" => Ok(StatusFilter::Membership(MembershipStatus::Subscribed)),
            "unconfirmed" => Ok(StatusFilter::Membership(MembershipStatus::Unconfirmed)),
            other => other
                .parse()
                .map(StatusFilter::Subscriber)
                .map_err(|_| UnknownValue {
                    what: "status",
                    given: s.to_string(),
                    expected: "active, subscribed, unconfirmed, unsubscribed, bounced, blocklisted, undeliverable"
                        .into(),
                }),
        }
    }
}

/// A mailing list.
#[derive(Debug, Clone, Serialize)]
pub struct List {
    pub id: Uuid,
    /// The name operators use (`--list NAME`) and readers see (footer,
    /// `List-Id` phrase); any text.
    pub name: String,
    /// The `List-Id` label (RFC 2919): `List-Id: NAME <LABEL.domain>`.
    pub label: crate::ListLabel,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Whether the list's subscribe form (`POST /s/NAME`) takes requests.
    /// Off by default: a private list answers the form exactly as a list
    /// that does not exist, so the form cannot enumerate lists.
    pub public: bool,
}

/// Per-list counts by effective status.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ListCounts {
    pub subscribed: u64,
    pub unconfirmed: u64,
    pub unsubscribed: u64,
    pub bounced: u64,
    pub blocklisted: u64,
    /// Members whose domain the domain check found undeliverable.
    pub undeliverable: u64,
}

impl ListCounts {
    /// Every membership of the list, whatever its status.
    pub fn total(&self) -> u64 {
        self.subscribed
            + self.unconfirmed
            + self.unsubscribed
            + self.bounced
            + self.blocklisted
            + self.undeliverable
    }
}

/// A list with its counts, as `list ls` and `list show` print it.
#[derive(Debug, Clone, Serialize)]
pub struct ListSummary {
    #[serde(flatten)]
    pub list: List,
    pub counts: ListCounts,
}

/// A subscriber (one per normalised address).
#[derive(Debug, Clone, Serialize)]
pub struct Subscriber {
    pub id: Uuid,
    pub email: String,
    pub name: Option<String>,
    pub attributes: Attributes,
    pub status: SubscriberStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One list membership of a subscriber.
#[derive(Debug, Clone, Serialize)]
pub struct Membership {
    pub list: String,
    pub status: MembershipStatus,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One recorded change of a subscriber: what happened, who caused it, why.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    pub action: AuditAction,
    pub actor: Actor,
    /// The list concerned, when the change was about one membership.
    pub list: Option<String>,
    pub reason: String,
}

/// Everything `sub show` prints about one subscriber.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberDetail {
    #[serde(flatten)]
    pub subscriber: Subscriber,
    pub memberships: Vec<Membership>,
    pub audit: Vec<AuditEntry>,
}

/// A row of `sub ls`: the subscriber, and the membership status when a list was named.
#[derive(Debug, Clone, Serialize)]
pub struct SubscriberRow {
    #[serde(flatten)]
    pub subscriber: Subscriber,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub membership: Option<MembershipStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_explain_errors() {
        for s in SubscriberStatus::ALL {
            assert_eq!(s.as_str().parse::<SubscriberStatus>().unwrap(), *s);
        }
        assert_eq!(
            "Bounced".parse::<SubscriberStatus>().unwrap(),
            SubscriberStatus::Bounced
        );
        let err = "gone".parse::<SubscriberStatus>().unwrap_err().to_string();
        assert!(
            err.contains("`gone`") && err.contains("blocklisted"),
            "{err}"
        );
        assert_eq!(
            serde_json::to_string(&AuditAction::ListRemoved).unwrap(),
            "\"list-removed\""
        );
    }

    #[test]
    fn campaign_transitions() {
        use CampaignState::*;
        let legal = [
            (Draft, Scheduled),
            (Draft, Running),
            (Draft, Cancelled),
            (Scheduled, Draft),
            (Scheduled, Running),
            (Scheduled, Cancelled),
            (Running, Paused),
            (Running, Finished),
            (Running, Cancelled),
            (Paused, Running),
            (Paused, Cancelled),
        ];
        for from in CampaignState::ALL {
            for to in CampaignState::ALL {
                assert_eq!(
                    from.can_become(*to),
                    legal.contains(&(*from, *to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn status_filter_covers_both_levels() {
        assert_eq!(
            "subscribed".parse::<StatusFilter>().unwrap(),
            StatusFilter::Membership(MembershipStatus::Subscribed)
        );
        assert_eq!(
            "bounced".parse::<StatusFilter>().unwrap(),
            StatusFilter::Subscriber(SubscriberStatus::Bounced)
        );
        assert!(
            "dead"
                .parse::<StatusFilter>()
                .unwrap_err()
                .to_string()
                .contains("unconfirmed")
        );
    }
}
