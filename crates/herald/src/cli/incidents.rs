//! `herald incidents open|list|show|scope|drafts`: the incident register from the operator's
//! side, with the notification clocks computed now, the people affected from the audit trail and
//! the notification drafts.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use herald_domain::audit::Initiator;
use herald_domain::ids::IncidentId;
use herald_domain::incidents::{Incident, NewIncident, ScopeQuery, Selector};
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
    /// Find who the incident affected from the audit trail: what a credential (API key or
    /// OAuth client id), an integration or a route did in the window; adds them to the
    /// incident's affected set and prints the scope.
    Scope {
        id: String,
        #[arg(long, conflicts_with_all = ["integration", "route"])]
        credential: Option<String>,
        #[arg(long, conflicts_with = "route")]
        integration: Option<String>,
        /// A route template, e.g. /v1/subjects/{id}/export.
        #[arg(long)]
        route: Option<String>,
        /// Start of the window (RFC 3339).
        #[arg(long)]
        from: String,
        /// End of the window (RFC 3339; default now).
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Print the notification drafts (GDPR Art. 33(3) and 34, HIPAA §164.404(c), HHS data)
    /// with the facts still missing.
    Drafts {
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
}

fn incident_id(id: &str) -> anyhow::Result<IncidentId> {
    IncidentId::parse(id).map_err(|_| anyhow::anyhow!("{id:?} is not an incident id (inc_…)"))
}

async fn scope_command(
    herald: &Herald,
    id: &str,
    selector: Selector,
    from: &str,
    to: Option<&str>,
    output: JsonFlag,
) -> anyhow::Result<()> {
    let id = incident_id(id)?;
    let query = ScopeQuery {
        selector,
        from: at("from", from)?,
        to: to.map(|t| at("to", t)).transpose()?,
    };
    let outcome = herald
        .incidents()
        .scope(&id, query, &Initiator::admin())
        .await?;
    let r = &outcome.record;
    if output.json {
        return emit_json(&json!({
            "scope": {
                "by": r.by, "value": r.value, "from": time(r.from), "to": time(r.to),
                "computed_at": time(r.computed_at), "entries_scanned": r.entries_scanned,
                "subjects": r.subjects, "by_kind": r.by_kind,
            },
            "added": outcome.added,
            "scoped_subjects": outcome.incident.facts.scoped_subjects,
            "affected": outcome.incident.facts.affected,
        }));
    }
    let kinds: Vec<String> = r.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
    emit(&format!(
        "{} {} {} → {}: {} entries, {} subjects ({}); {} new, {} in all",
        r.by,
        r.value,
        time(r.from),
        time(r.to),
        r.entries_scanned,
        r.subjects,
        kinds.join(", "),
        outcome.added,
        outcome.incident.facts.scoped_subjects
    ));
    Ok(())
}

async fn drafts_command(herald: &Herald, id: &str, output: JsonFlag) -> anyhow::Result<()> {
    let id = incident_id(id)?;
    let incident = herald.incidents().get(&id).await?;
    let drafts =
        herald_domain::incidents::drafts::drafts(&incident, &herald.config().incident_contacts());
    if output.json {
        let items: Vec<_> = drafts
            .iter()
            .map(|d| {
                json!({
                    "kind": d.kind.as_str(),
                    "title": d.title,
                    "basis": d.basis,
                    "clock_status": d.clock_status,
                    "due_at": time_opt(d.due_at),
                    "missing": d.missing,
                    "fields": d.fields.iter().map(|f| json!({
                        "name": f.name, "label": f.label, "value": f.value, "required": f.required,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        return emit_json(&json!({"drafts": items}));
    }
    let texts: Vec<String> = drafts
        .iter()
        .map(|d| herald_domain::incidents::drafts::render(d, id.as_str()))
        .collect();
    emit(&texts.join("\n\n"));
    Ok(())
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
        IncidentsCommand::Scope {
            id,
            credential,
            integration,
            route,
            from,
            to,
            output,
        } => {
            let selector = match (credential, integration, route) {
                (Some(c), None, None) => Selector::credential(&c).ok_or_else(|| {
                    anyhow::anyhow!(
                        "--credential must be an API key id (key_…) or OAuth client id (ocl_…)"
                    )
                })?,
                (None, Some(i), None) => {
                    Selector::Integration(herald_domain::ids::IntegrationId::parse(&i).map_err(
                        |_| anyhow::anyhow!("--integration must be an integration id (int_…)"),
                    )?)
                }
                (None, None, Some(r)) => Selector::Route(r),
                _ => anyhow::bail!("give one of --credential, --integration or --route"),
            };
            return scope_command(herald, &id, selector, &from, to.as_deref(), output).await;
        }
        IncidentsCommand::Drafts { id, output } => {
            return drafts_command(herald, &id, output).await;
        }
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
            (vec![incidents.get(&incident_id(&id)?).await?], output)
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
