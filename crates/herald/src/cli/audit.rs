//! `herald audit …`: verify (with progress), export, checkpoints, public keys, prune.

use std::io::Write;

use clap::Subcommand;
use herald_domain::audit::{Initiator, Report};
use serde_json::json;

use super::{JsonFlag, backup, emit, emit_json, time};
use crate::startup::Herald;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain, check every checkpoint signature and the witness. Exits 1 when
    /// the trail does not verify.
    Verify(JsonFlag),
    /// Print sealed entries as JSON lines (canonical fields plus `hash`), in sequence order.
    Export {
        /// Only entries after this sequence number.
        #[arg(long, default_value_t = 0)]
        after: u64,
    },
    /// Print the signed checkpoints as JSON lines (the witness-file format).
    Checkpoints,
    /// Print the public keys that verify checkpoint signatures.
    PublicKey(JsonFlag),
    /// Remove entries older than audit.retention behind a signed horizon checkpoint.
    Prune(JsonFlag),
}

fn report_json(report: &Report) -> serde_json::Value {
    json!({
        "ok": report.ok,
        "entries": report.entries,
        "head": {"seq": report.head.seq, "hash": data_encoding::HEXLOWER.encode(&report.head.hash)},
        "checkpoint": report.checkpoint,
        "first_bad": report.first_bad.as_ref().map(|f| json!({
            "seq": f.seq,
            "reason": f.problem.as_str(),
            "explanation": f.explanation,
        })),
    })
}

pub async fn audit_command(herald: &Herald, command: AuditCommand) -> anyhow::Result<()> {
    let audit = herald.audit();
    let admin = Initiator::admin();
    match command {
        AuditCommand::Verify(output) => {
            // Verification must still run when sealing refuses (a trail cut short): the
            // report is what tells the operator why.
            if let Err(e) = audit.seal().await {
                tracing::warn!(error = %e, "could not seal the audit trail before verifying");
            }
            let progress = backup::progress_for(output.json);
            let observe = |step: herald_domain::audit::Progress| match step {
                herald_domain::audit::Progress::Total(n) => {
                    progress.phase("verify audit chain", Some(n));
                }
                herald_domain::audit::Progress::Done(n) => progress.advance(n),
            };
            let report = audit.verify_observed(&admin, &observe).await?;
            progress.finish();
            if output.json {
                emit_json(&report_json(&report))?;
            } else if let Some(finding) = &report.first_bad {
                emit(&format!(
                    "the audit trail does NOT verify: {} at entry {} ({})",
                    finding.problem.as_str(),
                    finding.seq,
                    finding.explanation
                ));
            } else {
                emit(&format!(
                    "ok: {} entries verified, head {} ({}), last checkpoint {}",
                    report.entries,
                    report.head.seq,
                    data_encoding::HEXLOWER.encode(&report.head.hash),
                    report
                        .checkpoint
                        .map_or_else(|| "none".to_owned(), |c| c.to_string())
                ));
            }
            if !report.ok {
                anyhow::bail!("the audit trail does not verify");
            }
        }
        AuditCommand::Export { after } => {
            audit.seal().await?;
            // The entries go to stdout; the progress, if any, to stderr.
            let progress = backup::progress_for(false);
            let total = herald
                .store()
                .audit_last_seq()
                .await?
                .map(|last| last.saturating_sub(after));
            progress.phase("export audit entries", total);
            let mut stdout = std::io::stdout().lock();
            let mut cursor = after;
            let mut written = 0u64;
            loop {
                let page = audit.entries(cursor, 5000).await?;
                let Some(last) = page.last() else { break };
                cursor = last.seq;
                for entry in &page {
                    serde_json::to_writer(&mut stdout, &entry.export_json())?;
                    writeln!(stdout)?;
                    written += 1;
                }
                progress.advance(page.len() as u64);
            }
            stdout.flush()?;
            progress.finish();
            audit.record_export(&admin, after, written).await?;
        }
        AuditCommand::Checkpoints => {
            let mut stdout = std::io::stdout().lock();
            for checkpoint in audit.checkpoints().await? {
                serde_json::to_writer(&mut stdout, &checkpoint.to_json())?;
                writeln!(stdout)?;
            }
        }
        AuditCommand::PublicKey(output) => {
            let keys = audit.public_keys().await?;
            if output.json {
                emit_json(&json!({
                    "active_key_id": audit.key_id(),
                    "keys": keys.iter().map(|k| json!({
                        "key_id": k.key_id,
                        "algorithm": "Ed25519",
                        "public_key": data_encoding::BASE64.encode(&k.public_key),
                        "created_at": time(k.created_at),
                    })).collect::<Vec<_>>(),
                }))?;
            } else {
                for k in &keys {
                    emit(&format!(
                        "{}  Ed25519  {}",
                        k.key_id,
                        data_encoding::BASE64.encode(&k.public_key)
                    ));
                }
            }
        }
        AuditCommand::Prune(output) => {
            let pruned = audit.prune(&admin).await?;
            if output.json {
                emit_json(&json!({
                    "through_seq": pruned.as_ref().map(|p| p.through_seq),
                    "removed": pruned.as_ref().map_or(0, |p| p.removed),
                }))?;
            } else {
                match pruned {
                    Some(p) => emit(&format!(
                        "removed {} entries through {}; a signed horizon checkpoint keeps the rest verifiable",
                        p.removed, p.through_seq
                    )),
                    None => emit("nothing is older than the retention period"),
                }
            }
        }
    }
    Ok(())
}
