//! API tokens and what each may do (`kiln token create --scope …`, `/api/tokens`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::spec::FieldError;

/// What a bearer token may do. Scopes nest: `read` ⊂ `submit` ⊂ `admin`; `worker` is apart
/// (the worker protocol, its attempts' artifacts and datasets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// See jobs, metrics, logs, artifacts, workers, datasets and live events.
    Read,
    /// Read, and submit, cancel, retry, annotate, import and share jobs; push datasets.
    Submit,
    /// Everything: tokens, draining workers, deleting datasets, the audit log.
    Admin,
    /// A worker: `/ws/worker`, the artifacts of the attempts assigned to it, datasets.
    Worker,
}

impl TokenScope {
    pub const ALL: [TokenScope; 4] = [
        TokenScope::Read,
        TokenScope::Submit,
        TokenScope::Admin,
        TokenScope::Worker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TokenScope::Read => "read",
            TokenScope::Submit => "submit",
            TokenScope::Admin => "admin",
            TokenScope::Worker => "worker",
        }
    }
}

impl fmt::Display for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TokenScope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TokenScope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("unknown scope `{s}`; allowed: read, submit, admin, worker"))
    }
}

/// Longest token name, in characters.
pub const MAX_TOKEN_NAME: usize = 100;

/// Longest lifetime of a token: ten years, in seconds.
pub const MAX_EXPIRES_IN_S: u64 = 10 * 365 * 24 * 3600;

/// `POST /api/tokens` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub scope: TokenScope,
    /// Who or what holds it (shown by `kiln token ls`); 1 to 100 characters.
    pub name: String,
    /// Seconds until it stops working (none: until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// A worker token only: the worker id it may act as (none: any id, but only for the
    /// attempts of the workers that connected with it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
}

impl CreateToken {
    /// Every wrong field, named.
    pub fn check(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, value: String, allowed: &str| {
            errors.push(FieldError {
                field: field.to_string(),
                value,
                allowed: allowed.to_string(),
            });
        };
        let chars = self.name.chars().count();
        if self.name.trim().is_empty() || chars > MAX_TOKEN_NAME {
            bad(
                "name",
                format!("{:?}", self.name),
                "1 to 100 characters, not only spaces",
            );
        }
        if let Some(s) = self.expires_in_s
            && !(60..=MAX_EXPIRES_IN_S).contains(&s)
        {
            bad(
                "expires_in_s",
                s.to_string(),
                "60 (a minute) to 315360000 (ten years)",
            );
        }
        if let Some(id) = &self.worker_id {
            if self.scope != TokenScope::Worker {
                bad(
                    "worker_id",
                    format!("{id:?}"),
                    "only with scope worker (a token bound to one worker)",
                );
            } else if id.trim().is_empty() || id.chars().count() > 200 {
                bad("worker_id", format!("{id:?}"), "1 to 200 characters");
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// A token as `GET /api/tokens` lists it (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    pub id: i64,
    pub name: String,
    pub scope: TokenScope,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub worker_id: Option<String>,
}

/// `POST /api/tokens` answer: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    pub info: TokenInfo,
    pub token: String,
}

/// One request that changed something, as `GET /api/audit` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: i64,
    pub ts_ms: i64,
    /// The token's id (none: it was revoked since, or the request had none that counted).
    pub token_id: Option<i64>,
    pub token_name: String,
    pub scope: TokenScope,
    pub method: String,
    /// The request's path, e.g. `/api/jobs/3/cancel` (never its query: tokens may be there).
    pub path: String,
    /// The answer's HTTP status.
    pub status: u16,
    /// The client's address, if known.
    pub peer: Option<String>,
}

/// A duration as `kiln token create --expires` takes it: a whole number and a unit, `s`, `m`,
/// `h` or `d` (`90d`, `12h`).
pub fn parse_duration_s(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let unit = text.chars().last().unwrap_or(' ');
    let per = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => {
            return Err(format!(
                "`{text}` is not a duration: a whole number and s, m, h or d (e.g. 90d)"
            ));
        }
    };
    text[..text.len() - 1]
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .ok_or_else(|| {
            format!("`{text}` is not a duration: a whole number and s, m, h or d (e.g. 90d)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_unknown_ones_are_named() {
        for scope in TokenScope::ALL {
            assert_eq!(scope.as_str().parse::<TokenScope>(), Ok(scope));
            let json = serde_json::to_string(&scope).expect("json");
            assert_eq!(json, format!("\"{scope}\""));
        }
        let err = "owner".parse::<TokenScope>().expect_err("unknown");
        assert!(err.contains("owner") && err.contains("read, submit, admin, worker"));
    }

    #[test]
    fn create_token_names_every_bad_field() {
        let ok = CreateToken {
            scope: TokenScope::Worker,
            name: "gpu-1".into(),
            expires_in_s: Some(3600),
            worker_id: Some("gpu-1".into()),
        };
        assert_eq!(ok.check(), Ok(()));
        let bad = CreateToken {
            scope: TokenScope::Read,
            name: "  ".into(),
            expires_in_s: Some(5),
            worker_id: Some("w".into()),
        };
        let fields: Vec<String> = bad
            .check()
            .expect_err("bad")
            .into_iter()
            .map(|e| e.field)
            .collect();
        assert_eq!(fields, ["name", "expires_in_s", "worker_id"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("90d"), Ok(90 * 86_400));
        assert_eq!(parse_duration_s("12h"), Ok(43_200));
        assert_eq!(parse_duration_s("30m"), Ok(1800));
        assert_eq!(parse_duration_s("60s"), Ok(60));
        for bad in ["", "d", "1.5h", "-1d", "10w", "99999999999999999999d"] {
            assert!(parse_duration_s(bad).is_err(), "{bad}");
        }
    }
}
