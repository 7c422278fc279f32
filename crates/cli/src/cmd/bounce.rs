//! `rundbrief bounce …`

use crate::output;
use anyhow::Context;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

/// Largest message read for parsing; the parser itself looks at the first 4 MiB.
const MAX_READ: u64 = 64 << 20;

pub fn parse(file: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let mut raw = Vec::new();
    if file.as_os_str() == "-" {
        std::io::stdin()
            .take(MAX_READ)
            .read_to_end(&mut raw)
            .context("reading standard input")?;
    } else {
        std::fs::File::open(file)
            .with_context(|| format!("cannot open {}", file.display()))?
            .take(MAX_READ)
            .read_to_end(&mut raw)
            .with_context(|| format!("reading {}", file.display()))?;
    }
    let parsed = rundbrief_bounce::parse(&raw);
    if json {
        output::json(&parsed)?;
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "kind   {}",
        serde_json::to_value(parsed.kind)?.as_str().unwrap_or("?")
    );
    println!("class  {}  (rule {})", parsed.class.as_str(), parsed.rule);
    if let Some(id) = &parsed.original_message_id {
        println!("original message-id  {id}");
    }
    if let Some(t) = &parsed.feedback_type {
        println!("feedback type        {t}");
    }
    if !parsed.recipients.is_empty() {
        let rows = parsed.recipients.iter().map(|r| {
            [
                r.address.clone(),
                r.class.as_str().to_string(),
                r.status.clone(),
                r.action.clone(),
                r.rule.to_string(),
                r.diagnostic.clone(),
            ]
        });
        println!(
            "{}",
            output::table(
                &[
                    "recipient",
                    "class",
                    "status",
                    "action",
                    "rule",
                    "diagnostic"
                ],
                rows
            )
        );
    }
    Ok(ExitCode::SUCCESS)
}
