//! `herald subjects export|erase` and `herald requests list`: a data subject's rights from
//! the operator's side.

use anyhow::Context;
use clap::Subcommand;
use herald_domain::audit::Initiator;
use herald_domain::ids::SubjectId;
use serde_json::json;

use super::{JsonFlag, all_pages, emit, emit_json, time};
use crate::startup::Herald;

#[derive(Debug, Subcommand)]
pub enum SubjectsCommand {
    /// Print everything Herald holds about the subject as one JSON document (GDPR Art. 15/20;
    /// schema: docs/schemas/subject-export.schema.json). The export is audited.
    Export {
        /// The subject's id (sub_…).
        id: String,
    },
    /// Erase the subject by crypto-shredding and print the signed receipt (JSON). Irreversible.
    Erase {
        /// The subject's id (sub_…).
        id: String,
        /// Confirms the erasure (it cannot be undone).
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RequestsCommand {
    /// List rights requests with their due dates (all, or by --status open|overdue|done).
    List {
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        output: JsonFlag,
    },
}

/// `herald subjects export ID` · `herald subjects erase ID --yes`, as the operator (`admin`).
pub async fn subjects_command(herald: &Herald, command: SubjectsCommand) -> anyhow::Result<()> {
    let parse = |id: &str| {
        SubjectId::parse(id).with_context(|| format!("{id:?} is not a subject id (sub_…)"))
    };
    let rights = herald.subject_rights();
    match command {
        SubjectsCommand::Export { id } => {
            let document = rights
                .export(&parse(&id)?, &Initiator::admin())
                .await
                .map_err(subject_rights_error)?;
            emit_json(&document)
        }
        SubjectsCommand::Erase { id, yes } => {
            let id = parse(&id)?;
            if !yes {
                anyhow::bail!("erasure cannot be undone: add --yes to erase {id}");
            }
            let receipt = rights
                .erase(&id, &Initiator::admin())
                .await
                .map_err(subject_rights_error)?;
            emit_json(&json!({
                "id": receipt.subject_id.as_str(),
                "erased_at": time(receipt.erased_at),
                "receipt": receipt.receipt,
            }))
        }
    }
}

/// Plain words for the operator (the API's problem codes, with what to do).
fn subject_rights_error(error: herald_domain::rights::SubjectRightsError) -> anyhow::Error {
    use herald_domain::rights::SubjectRightsError as E;
    match error {
        E::NotFound => anyhow::anyhow!("no such subject"),
        E::Erased => anyhow::anyhow!("the subject was erased (subject_erased)"),
        E::LegalHold => anyhow::anyhow!(
            "a legal hold applies (legal_hold): release it first (DELETE /v1/subjects/{{id}}/legal-hold)"
        ),
        other => other.into(),
    }
}

/// `herald requests list`: the register, soonest logged first, with status and due date.
pub async fn requests_list(
    herald: &Herald,
    status: Option<&str>,
    output: &JsonFlag,
) -> anyhow::Result<()> {
    use herald_domain::rights::RequestStatus;
    let rights = herald.rights();
    let status = status
        .map(|s| {
            RequestStatus::parse(s)
                .with_context(|| format!("unknown status {s:?}: open, overdue or done"))
        })
        .transpose()?;
    let now = rights.now();
    let all = all_pages(|page| async move { rights.list(status, &page, None).await }).await?;
    if output.json {
        let data: Vec<serde_json::Value> = all
            .iter()
            .map(|r| {
                json!({
                    "id": r.id.as_str(),
                    "kind": r.kind.as_str(),
                    "subject_id": r.subject_id.as_ref().map(|s| s.as_str()),
                    "status": r.status(now).as_str(),
                    "received_at": time(r.received_at),
                    "due_at": time(r.due_at),
                    "extended_months": r.extended_months,
                    "completed_at": r.completed_at.map(time),
                })
            })
            .collect();
        emit_json(&json!({"data": data}))?;
    } else {
        for r in &all {
            emit(&format!(
                "{}  {:<13}  {:<7}  due {}  received {}{}",
                r.id,
                r.kind.as_str(),
                r.status(now).as_str(),
                time(r.due_at),
                time(r.received_at),
                r.subject_id
                    .as_ref()
                    .map(|s| format!("  {s}"))
                    .unwrap_or_default()
            ));
        }
    }
    Ok(())
}
