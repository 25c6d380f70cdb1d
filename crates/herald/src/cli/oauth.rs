//! `herald oauth-clients …`, `herald oauth …` and `herald integrations revoke`: the OAuth
//! side of the operator's commands.

use anyhow::Context;
use clap::Subcommand;
use herald_domain::audit::Initiator;
use herald_domain::auth::oauth::{ClientAuthMethod, OAuthClientRecord};
use herald_domain::auth::{ClientRegistration, Manager, Scope};
use herald_domain::ids::OAuthClientId;
use serde_json::json;

use super::{
    HasCursor, JsonFlag, all_pages, emit, emit_json, integration_json, parse_scopes, time, time_opt,
};
use crate::startup::Herald;

#[derive(Debug, Subcommand)]
pub enum OAuthClientsCommand {
    /// Register an OAuth client for an integration; a secret is printed once.
    Create {
        /// Integration name or id (int_…).
        #[arg(long)]
        integration: String,
        /// A name to recognise the client by.
        #[arg(long)]
        name: String,
        /// A scope the client may request; repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// client_secret_basic (default), client_secret_post or private_key_jwt.
        #[arg(long, default_value = "client_secret_basic")]
        auth_method: String,
        /// For private_key_jwt: a file holding the client's public JWK (Ed25519 or P-256).
        #[arg(long, value_name = "FILE")]
        jwk_file: Option<std::path::PathBuf>,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// List an integration's OAuth clients (never their secrets).
    List {
        /// Integration name or id.
        #[arg(long)]
        integration: String,
        #[command(flatten)]
        output: JsonFlag,
    },
    /// Revoke an OAuth client; its tokens are refused from the next request on.
    Revoke {
        id: String,
        #[command(flatten)]
        output: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum OAuthCommand {
    /// Make a new access-token signing key active; the previous one keeps verifying until its
    /// last token expires.
    RotateSigningKey(JsonFlag),
}

pub fn client_json(c: &OAuthClientRecord) -> serde_json::Value {
    json!({
        "id": c.id,
        "integration_id": c.integration_id,
        "name": c.name,
        "scopes": c.scopes.iter().map(Scope::as_str).collect::<Vec<_>>(),
        "token_endpoint_auth_method": c.auth_method.as_str(),
        "jwk": c.jwk.as_ref().map(|k| k.to_json()),
        "created_at": time(c.created_at),
        "revoked_at": time_opt(c.revoked_at),
    })
}

impl HasCursor for OAuthClientRecord {
    fn cursor(&self) -> String {
        self.id.to_string()
    }
}

pub async fn clients_command(herald: &Herald, command: OAuthClientsCommand) -> anyhow::Result<()> {
    let auth = herald.auth();
    match command {
        OAuthClientsCommand::Create {
            integration,
            name,
            scopes,
            auth_method,
            jwk_file,
            output,
        } => {
            let integration = auth.resolve_integration(&integration).await?;
            let scopes = parse_scopes(&scopes)?;
            let auth_method = ClientAuthMethod::parse(&auth_method).with_context(|| {
                format!(
                    "unknown auth method {auth_method:?} (client_secret_basic, client_secret_post, private_key_jwt)"
                )
            })?;
            let jwk = match jwk_file {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    Some(
                        serde_json::from_str(&text)
                            .with_context(|| format!("{} is not JSON", path.display()))?,
                    )
                }
                None => None,
            };
            let created = auth
                .create_oauth_client(
                    &integration.id,
                    ClientRegistration {
                        name,
                        auth_method,
                        scopes,
                        jwk,
                    },
                    Manager::Operator,
                    &Initiator::admin(),
                )
                .await?;
            let secret = created.secret.as_ref().map(|s| s.expose().to_owned());
            if output.json {
                let mut value = client_json(&created.record);
                value["client_id"] = json!(created.record.id);
                if let Some(secret) = &secret {
                    value["client_secret"] = json!(secret);
                }
                emit_json(&value)?;
            } else {
                emit(&format!(
                    "created OAuth client {} for {} ({})\nscopes: {}\nauth method: {}",
                    created.record.id,
                    integration.name,
                    integration.id,
                    created.record.scopes.to_storage(),
                    created.record.auth_method
                ));
                if let Some(secret) = &secret {
                    emit(&format!("client secret (shown once): {secret}"));
                }
            }
        }
        OAuthClientsCommand::List {
            integration,
            output,
        } => {
            let integration = auth.resolve_integration(&integration).await?;
            let id = &integration.id;
            let clients =
                all_pages(
                    |page| async move { auth.oauth_clients(id, &page, Manager::Operator).await },
                )
                .await?;
            if output.json {
                emit_json(&json!({"data": clients.iter().map(client_json).collect::<Vec<_>>()}))?;
            } else {
                for c in &clients {
                    let state = c
                        .revoked_at
                        .map_or_else(|| "active".to_owned(), |at| format!("revoked {}", time(at)));
                    emit(&format!(
                        "{}  {}  {}  [{}]  {}",
                        c.id,
                        c.name,
                        c.auth_method,
                        c.scopes.to_storage(),
                        state
                    ));
                }
            }
        }
        OAuthClientsCommand::Revoke { id, output } => {
            let id = OAuthClientId::parse(&id).context("not an OAuth client id (ocl_…)")?;
            let (record, _) = auth
                .revoke_oauth_client(&id, Manager::Operator, &Initiator::admin())
                .await?;
            if output.json {
                emit_json(&client_json(&record))?;
            } else {
                emit(&format!(
                    "revoked {} at {}",
                    record.id,
                    record.revoked_at.map_or_else(String::new, time)
                ));
            }
        }
    }
    Ok(())
}

pub async fn oauth_command(herald: &Herald, command: OAuthCommand) -> anyhow::Result<()> {
    match command {
        OAuthCommand::RotateSigningKey(output) => {
            let (kid, previous) = herald
                .auth()
                .oauth()
                .rotate_signing_key(&Initiator::admin())
                .await?;
            if output.json {
                emit_json(&json!({"key_id": kid, "previous_key_id": previous}))?;
            } else {
                emit(&format!(
                    "signing key {kid} is active{}",
                    previous.map_or_else(String::new, |p| format!(
                        "; {p} verifies until its last token expires"
                    ))
                ));
            }
        }
    }
    Ok(())
}

/// `herald integrations revoke`: the integration with all its keys and clients.
pub async fn revoke_integration(
    herald: &Herald,
    integration: &str,
    output: &JsonFlag,
) -> anyhow::Result<()> {
    let auth = herald.auth();
    let integration = auth.resolve_integration(integration).await?;
    let (record, revoked) = auth
        .revoke_integration(&integration.id, Manager::Operator, &Initiator::admin())
        .await?;
    let counts = revoked.unwrap_or_default();
    if output.json {
        let mut value = integration_json(&record);
        value["api_keys_revoked"] = json!(counts.api_keys);
        value["oauth_clients_revoked"] = json!(counts.oauth_clients);
        emit_json(&value)?;
    } else if revoked.is_some() {
        emit(&format!(
            "revoked integration {} ({}) with {} API keys and {} OAuth clients",
            record.name, record.id, counts.api_keys, counts.oauth_clients
        ));
    } else {
        emit(&format!(
            "integration {} ({}) was revoked already",
            record.name, record.id
        ));
    }
    Ok(())
}
