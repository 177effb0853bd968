//! `kiln token create|ls|revoke` and `kiln audit`: API tokens with scopes, and what they
//! changed (admin token).

use anyhow::Context;
use clap::Subcommand;
use kiln_client::Client;
use kiln_proto::token::{CreateToken, TokenScope, parse_duration_s};

use crate::client_cmd::{age, now_ms, truncate};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a token and print it (the only time it is shown). Scopes: read (see everything),
    /// submit (read, and run, cancel, retry, tag and share jobs, push datasets), admin
    /// (everything), worker (for `kiln worker`).
    Create {
        #[arg(long)]
        scope: TokenScope,
        /// Who or what holds it (default: "<scope> token").
        #[arg(long)]
        name: Option<String>,
        /// It stops working after this long: a whole number and s, m, h or d (e.g. 90d).
        #[arg(long, value_parser = parse_duration_s)]
        expires: Option<u64>,
        /// A worker token that only worker ID may use.
        #[arg(long, value_name = "ID")]
        worker: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tokens (never the tokens themselves).
    Ls {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token (its id from `kiln token ls`): it stops working at once.
    Revoke { id: i64 },
}

pub async fn run(client: &Client, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            scope,
            name,
            expires,
            worker,
            json,
        } => {
            let made = client
                .create_token(&CreateToken {
                    scope,
                    name: name.unwrap_or_else(|| format!("{scope} token")),
                    expires_in_s: expires,
                    worker_id: worker,
                })
                .await
                .context("cannot create the token")?;
            if json {
                println!("{}", serde_json::to_string_pretty(&made)?);
            } else {
                eprintln!(
                    "token {} ({} scope{}) created; it is shown only now:",
                    made.info.id,
                    made.info.scope,
                    made.info
                        .worker_id
                        .as_deref()
                        .map(|w| format!(", worker {w} only"))
                        .unwrap_or_default()
                );
                println!("{}", made.token);
            }
        }
        TokenCommand::Ls { json } => {
            let tokens = client.tokens().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!(
                    "{:>5}  {:<7} {:<28} {:<12} {:<14} WORKER",
                    "ID", "SCOPE", "NAME", "CREATED", "EXPIRES"
                );
                let now = now_ms();
                for t in &tokens {
                    let expires = match t.expires_ms {
                        None => "never".to_string(),
                        Some(at) if at <= now => format!("{} ago", age(at)),
                        Some(at) => format!("in {}", kiln_proto::fmt::age(now, at)),
                    };
                    println!(
                        "{:>5}  {:<7} {:<28} {:<12} {:<14} {}",
                        t.id,
                        t.scope.as_str(),
                        truncate(&t.name, 28),
                        format!("{} ago", age(t.created_ms)),
                        expires,
                        t.worker_id.as_deref().unwrap_or("-")
                    );
                }
            }
        }
        TokenCommand::Revoke { id } => {
            let t = client.revoke_token(id).await?;
            println!("token {} ({}, {}) revoked", t.id, t.name, t.scope);
        }
    }
    Ok(())
}

/// `kiln audit`: the newest `limit` entries of the audit log, oldest first.
pub async fn audit(client: &Client, limit: u32, json: bool) -> anyhow::Result<()> {
    // The log is read forward from `after`; page through it to keep only the newest.
    let mut after = 0;
    let mut newest = std::collections::VecDeque::new();
    loop {
        let page = client.audit(after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.seq;
        let full = page.len() == 1000;
        newest.extend(page);
        while newest.len() > limit as usize {
            newest.pop_front();
        }
        if !full {
            break;
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&newest)?);
        return Ok(());
    }
    println!(
        "{:>6}  {:<10} {:<24} {:<7} {:<6} PATH",
        "SEQ", "WHEN", "TOKEN", "METHOD", "STATUS"
    );
    for e in &newest {
        println!(
            "{:>6}  {:<10} {:<24} {:<7} {:<6} {}",
            e.seq,
            format!("{} ago", age(e.ts_ms)),
            truncate(&format!("{} ({})", e.token_name, e.scope), 24),
            e.method,
            e.status,
            e.path
        );
    }
    Ok(())
}
