//! `herald incidents open|list|show`: the incident register from the operator's side, with the
//! notification clocks computed now.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use herald_domain::audit::Initiator;
use herald_domain::ids::IncidentId;
use herald_domain::incidents::{Incident, NewIncident};
use herald_domain::store::PageRequest;
use serde_json::json;

use super::{JsonFlag, emit, emit_json, time, time_opt};
use crate::startup::Herald;

#[derive(Debug, Subcommand)]
pub enum IncidentsCommand {
    /// Open an incident (state `open`) and print it with its clocks.
    Open {
        /// What happened (stored encrypted).
        #[arg(long)]
        summary: String,
        /// When it was discovered (RFC 3339).
        #[arg(long)]
        detected_at: String,
        /// When it became known that personal data was breached (RFC 3339; GDPR's 72 hours
        /// run from here).
        #[arg(long)]
        became_aware_at: String,
        /// confidentiality, integrity or availability; repeat for several.
        #[arg(long = "kind", required = true)]
        kinds: Vec<String>,
        /// A category of personal data concerned (contact_data, message_content, health …);
        /// repeat for several.
        #[arg(long = "category")]
        categories: Vec<String>,
        /// How it was found (audit_review, report, alert …).
        #[arg(long)]
        source: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List incidents (all, or --status open|overdue) with their clocks.
    List {
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Show one incident with its clocks.
    Show {
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
}

fn at(field: &str, text: &str) -> anyhow::Result<herald_domain::clock::Timestamp> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("--{} must be an RFC 3339 time", field.replace('_', "-")))
}

fn incident_json(i: &Incident) -> serde_json::Value {
    json!({
        "id": i.id,
        "status": i.status.as_str(),
        "overdue": i.overdue(),
        "summary": i.narrative.summary,
        "kinds": i.facts.kinds,
        "data_categories": i.facts.data_categories,
        "source": i.facts.source,
        "detected_at": time(i.facts.detected_at),
        "became_aware_at": time(i.facts.became_aware_at),
        "risk": i.facts.risk,
        "affected": i.facts.affected,
        "authority_notified_at": time_opt(i.facts.authority_notified_at),
        "subjects_notified_at": time_opt(i.facts.subjects_notified_at),
        "clocks": i.deadlines.iter().map(|d| json!({
            "clock": d.kind.as_str(),
            "basis": d.kind.basis(),
            "status": d.status,
            "due_at": time_opt(d.due_at),
            "done_at": time_opt(d.done_at),
            "reason": d.reason,
            "missing": d.missing,
        })).collect::<Vec<_>>(),
    })
}

fn incident_text(i: &Incident) -> String {
    let mut text = format!(
        "{}  {}{}  aware {}  {}",
        i.id,
        i.status.as_str(),
        if i.overdue() { " (OVERDUE)" } else { "" },
        time(i.facts.became_aware_at),
        i.narrative.summary.lines().next().unwrap_or("")
    );
    for d in &i.deadlines {
        let status = serde_json::to_value(&d.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        text.push_str(&format!(
            "\n    {:<18} {:<15} {}{}",
            d.kind.as_str(),
            status,
            d.due_at
                .map_or_else(String::new, |t| format!("due {}", time(t))),
            if d.missing.is_empty() {
                String::new()
            } else {
                format!("needs {}", d.missing.join(", "))
            }
        ));
    }
    text
}

pub async fn incidents_command(herald: &Herald, command: IncidentsCommand) -> anyhow::Result<()> {
    let incidents = herald.incidents();
    let (found, output) = match command {
        IncidentsCommand::Open {
            summary,
            detected_at,
            became_aware_at,
            kinds,
            categories,
            source,
            output,
        } => {
            let incident = incidents
                .open(
                    NewIncident {
                        summary,
                        detected_at: at("detected_at", &detected_at)?,
                        became_aware_at: at("became_aware_at", &became_aware_at)?,
                        kinds,
                        data_categories: categories,
                        source,
                    },
                    &Initiator::admin(),
                )
                .await?;
            (vec![incident], output)
        }
        IncidentsCommand::List { status, output } => {
            if status
                .as_deref()
                .is_some_and(|s| s != "open" && s != "overdue")
            {
                anyhow::bail!("--status must be open or overdue");
            }
            let mut all = Vec::new();
            let mut after = None;
            loop {
                let page = PageRequest {
                    after: after.clone(),
                    limit: 500,
                };
                let mut batch = incidents.list(status.as_deref(), &page).await?;
                let more = batch.len() > 500;
                batch.truncate(500);
                after = batch.last().map(|i| i.id.as_str().to_owned());
                all.extend(batch);
                if !more {
                    break;
                }
            }
            (all, output)
        }
        IncidentsCommand::Show { id, output } => {
            let id = IncidentId::parse(&id)
                .map_err(|_| anyhow::anyhow!("{id:?} is not an incident id (inc_…)"))?;
            (vec![incidents.get(&id).await?], output)
        }
    };
    if output.json {
        let items: Vec<_> = found.iter().map(incident_json).collect();
        emit_json(&json!({"data": items}))
    } else {
        for incident in &found {
            emit(&incident_text(incident));
        }
        Ok(())
    }
}
