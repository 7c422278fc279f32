//! Lifting the reputation circuit breaker: `campaign resume NAME` lifts
//! every suspended provider and a breaker's pause; `campaign resume NAME
//! --provider P` lifts one provider. The breaker itself runs inside each
//! campaign run (`rundbrief_scheduler::breaker`); what it decided is stored
//! (`provider_states`, `campaigns.paused_reason`) so that it survives a
//! restart.

use crate::App;
use crate::error::{AppError, Result};
use rundbrief_core::CampaignState;

/// What a resume lifted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Lifted {
    /// The providers no longer suspended.
    pub providers: Vec<String>,
    /// Why the breaker had paused the campaign, if it had.
    pub paused_reason: Option<String>,
    /// The campaign's state before (`paused` or `running`).
    pub from: CampaignState,
}

impl App {
    /// Lifts the breaker of campaign `name` — one provider with
    /// `provider`, else every provider and a breaker's pause — and moves a
    /// paused campaign back to `running` (its held deliveries are due at
    /// once; the caller sends, or `serve` does). The complaint ratio counts
    /// anew from now.
    ///
    /// # Errors
    /// Not found; `provider` is not suspended in the campaign (the error
    /// lists those that are); the campaign cannot be resumed from its state.
    pub async fn lift_breaker(&self, name: &str, provider: Option<&str>) -> Result<Lifted> {
        let store = &self.store;
        let c = store.campaign(name).await?.campaign;
        let now = self.clock.now();
        if let Some(p) = provider {
            let suspended = store.suspended_providers(c.id).await?;
            if !suspended.iter().any(|(s, _)| s == p) {
                let names: Vec<&str> = suspended.iter().map(|(s, _)| s.as_str()).collect();
                return Err(AppError::invalid(if names.is_empty() {
                    format!(
                        "provider `{p}` is not suspended in campaign `{name}`: no provider is \
                         (`campaign status {name}` shows the providers)"
                    )
                } else {
                    format!(
                        "provider `{p}` is not suspended in campaign `{name}`; suspended: {}",
                        names.join(", ")
                    )
                }));
            }
        }
        let paused_reason = store.campaign_paused_reason(c.id).await?;
        let providers = store.lift_providers(c.id, provider, now).await?;
        if provider.is_none() || c.state == CampaignState::Paused {
            store.reset_breaker(c.id, now).await?;
        }
        let from = store
            .transition_campaign(name, CampaignState::Running)
            .await?;
        for p in &providers {
            tracing::info!(campaign = name, provider = %p, "circuit breaker lifted for the provider");
        }
        Ok(Lifted {
            providers,
            paused_reason,
            from,
        })
    }
}
