//! `rundbrief clean [--dry-run]`: prune every subscriber whose bounce score
//! is over the threshold (the app's bounce policy, the same prune as the
//! endpoint's).

use crate::output;
use rundbrief_app::App;
use std::process::ExitCode;

pub async fn run(app: &App, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    let over = app.bounces().clean(dry_run).await?;
    let threshold = app.bounces().policy().score.threshold;
    if json {
        // As with `import --dry-run`, the count is what would be done.
        output::json(
            &serde_json::json!({ "dry_run": dry_run, "pruned": over.len(), "subscribers": over }),
        )?;
    } else {
        for s in &over {
            match &s.last_bounce {
                Some(last) => println!("{}  score {:.1}  last counted: {last}", s.email, s.score),
                None => println!("{}  score {:.1}", s.email, s.score),
            }
        }
        if dry_run {
            println!(
                "{} subscriber(s) would be pruned (threshold {threshold:.1}); run without --dry-run to do it",
                over.len(),
            );
        } else {
            println!("pruned {} subscriber(s)", over.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}
