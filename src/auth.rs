//! Who is calling, and what they may do. One set of rules for REST, GraphQL
//! and the WebSocket feed.
//!
//! Tokens are JWTs signed with HS256 and the node's `JWT_SECRET` (at least 32
//! bytes). Verification pins the algorithm (so `alg: none` and RS/ES tokens
//! are refused), requires `exp` and `sub`, checks `nbf` when present, and
//! checks `iss` / `aud` when configured. Clock leeway: [`LEEWAY_S`] seconds.
//!
//! Roles (claim `role`):
//! - `admin`: everything, every owner's tasks;
//! - `user`: creates tasks and sees only the tasks it owns (`sub` is the
//!   owner); someone else's task answers "not found";
//! - `worker`: bound to one agent (claim `agent`): claims, heartbeats,
//!   completes and fails that agent's tasks, and reads them;
//! - `metrics`: for scrapers: reads `/metrics`, queue status, statistics,
//!   agents and nodes; no tasks.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::task::{DEFAULT_MAX_ID_LEN, OWNER_EXTRA_CHARS, Task, validate_ident};

/// Shortest accepted `JWT_SECRET` (bytes).
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated on `exp` and `nbf` (seconds).
pub const LEEWAY_S: u64 = 5;
/// Longest lifetime `taskherd token` mints (one year).
pub const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);

/// A principal's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, every owner.
    Admin,
    /// Runs one agent's tasks.
    Worker,
    /// Creates and follows its own tasks.
    User,
    /// Scrapes metrics and reads the queue's aggregate views; no tasks.
    Metrics,
}

impl Role {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Worker => "worker",
            Role::User => "user",
            Role::Metrics => "metrics",
        }
    }
}

/// The claims taskherd reads and mints.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Subject: the principal's id; owns the tasks it creates.
    pub sub: String,
    /// Role.
    pub role: Role,
    /// The agent a worker is bound to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Expiry (Unix seconds).
    pub exp: u64,
    /// Issued at (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// Token subject.
    pub sub: String,
    /// Role.
    pub role: Role,
    /// Bound agent (workers only).
    pub agent: Option<String>,
}

/// Why a token was refused (shown to the client: none of it is secret).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("missing bearer token")]
    Missing,
    /// Expired.
    #[error("token expired")]
    Expired,
    /// `nbf` in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// Any other defect: signature, algorithm, shape, issuer, audience, claims.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Token settings of a node.
#[derive(Clone)]
pub struct AuthConfig {
    /// HS256 secret (at least [`MIN_SECRET_BYTES`]).
    pub secret: Vec<u8>,
    /// Required issuer, if any.
    pub issuer: Option<String>,
    /// Required audience, if any.
    pub audience: Option<String>,
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthConfig")
            .field("secret", &"<redacted>")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish()
    }
}

impl AuthConfig {
    /// A config with a fresh random secret (for a node started without
    /// `JWT_SECRET`, and for tests).
    pub fn random() -> Self {
        let secret: [u8; 32] = rand::random();
        Self {
            secret: hex(&secret).into_bytes(),
            issuer: None,
            audience: None,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Verifies and mints tokens.
#[derive(Clone)]
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    config: AuthConfig,
}

impl Auth {
    /// Checks the secret's length and builds the verifier.
    pub fn new(config: AuthConfig) -> Result<Self> {
        if config.secret.len() < MIN_SECRET_BYTES {
            return Err(Error::Config(format!(
                "JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes (got {})",
                config.secret.len()
            )));
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_S;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // A configured issuer or audience must be present, not just match
        // when present.
        let mut required = vec!["exp", "sub"];
        if let Some(iss) = &config.issuer {
            validation.set_issuer(&[iss]);
            required.push("iss");
        }
        match &config.audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Ok(Self {
            decoding: DecodingKey::from_secret(&config.secret),
            encoding: EncodingKey::from_secret(&config.secret),
            validation,
            config,
        })
    }

    /// The principal a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm
                | ErrorKind::InvalidAlgorithmName
                | ErrorKind::UnsupportedAlgorithm
                | ErrorKind::MissingAlgorithm => {
                    AuthError::Invalid("algorithm must be HS256".into())
                }
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::MissingRequiredClaim(c) => {
                    AuthError::Invalid(format!("missing claim {c}"))
                }
                _ => AuthError::Invalid("malformed token".into()),
            })?;
        let claims = data.claims;
        principal_from(claims).map_err(AuthError::Invalid)
    }

    /// Signs a token for `sub` valid for `ttl` (at most [`MAX_TTL`]).
    pub fn mint(
        &self,
        sub: &str,
        role: Role,
        agent: Option<&str>,
        ttl: Duration,
    ) -> Result<String> {
        if ttl.is_zero() || ttl > MAX_TTL {
            return Err(Error::Validation(format!(
                "ttl must be 1 s to {} days",
                MAX_TTL.as_secs() / 86_400
            )));
        }
        let now = unix_now();
        let claims = Claims {
            sub: sub.to_string(),
            role,
            agent: agent.map(str::to_string),
            exp: now + ttl.as_secs().max(1),
            iat: Some(now),
            nbf: None,
            iss: self.config.issuer.clone(),
            aud: self.config.audience.clone(),
        };
        // Checked like a token from outside, so a bad subject fails here.
        principal_from(claims.clone()).map_err(Error::Validation)?;
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Config(format!("cannot sign a token: {e}")))
    }
}

fn principal_from(claims: Claims) -> std::result::Result<Principal, String> {
    validate_ident("sub", &claims.sub, DEFAULT_MAX_ID_LEN, OWNER_EXTRA_CHARS)
        .map_err(|e| e.to_string())?;
    let agent = match (claims.role, claims.agent) {
        (Role::Worker, Some(agent)) => {
            validate_ident("agent", &agent, DEFAULT_MAX_ID_LEN, &[]).map_err(|e| e.to_string())?;
            Some(agent)
        }
        (Role::Worker, None) => return Err("a worker token needs an agent claim".into()),
        (_, _) => None,
    };
    Ok(Principal {
        sub: claims.sub,
        role: claims.role,
        agent,
    })
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a principal was refused (the API answers 403, or 404 where existence
/// must not leak).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden(pub String);

impl Principal {
    /// Admins only.
    pub fn require_admin(&self) -> Result<(), Forbidden> {
        match self.role {
            Role::Admin => Ok(()),
            _ => Err(Forbidden("this operation needs the admin role".into())),
        }
    }

    /// Users and admins create, cancel and retry tasks.
    pub fn require_submitter(&self) -> Result<(), Forbidden> {
        match self.role {
            Role::Admin | Role::User => Ok(()),
            Role::Worker => Err(Forbidden(
                "worker tokens may only run their agent's tasks".into(),
            )),
            Role::Metrics => Err(Forbidden("metrics tokens may not change tasks".into())),
        }
    }

    /// Admins, and workers bound to `agent_id`, run that agent's tasks.
    pub fn require_runner(&self, agent_id: &str) -> Result<(), Forbidden> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Worker if self.agent.as_deref() == Some(agent_id) => Ok(()),
            Role::Worker => Err(Forbidden(format!(
                "this worker token is bound to another agent than {agent_id}"
            ))),
            Role::User | Role::Metrics => Err(Forbidden(
                "running tasks needs a worker or admin token".into(),
            )),
        }
    }

    /// Whether the principal may see `task` (a hidden task is "not found").
    pub fn can_see(&self, task: &Task) -> bool {
        match self.role {
            Role::Admin => true,
            Role::User => task.owner_id.as_deref() == Some(self.sub.as_str()),
            Role::Worker => self.agent.as_deref() == Some(task.agent_id.as_str()),
            Role::Metrics => false,
        }
    }

    /// Admins and metrics scrapers read `/metrics`.
    pub fn require_metrics_reader(&self) -> Result<(), Forbidden> {
        match self.role {
            Role::Admin | Role::Metrics => Ok(()),
            _ => Err(Forbidden("metrics need a metrics or admin token".into())),
        }
    }

    /// Everyone but metrics scrapers reads task lists.
    pub fn require_task_reader(&self) -> Result<(), Forbidden> {
        match self.role {
            Role::Metrics => Err(Forbidden("metrics tokens may not read tasks".into())),
            _ => Ok(()),
        }
    }

    /// The owner a created task gets.
    pub fn owner_id(&self) -> &str {
        &self.sub
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Auth {
        Auth::new(AuthConfig {
            secret: b"0123456789abcdef0123456789abcdef".to_vec(),
            issuer: Some("taskherd-test".into()),
            audience: Some("api".into()),
        })
        .unwrap()
    }

    #[test]
    fn short_secret_is_refused() {
        let short = AuthConfig {
            secret: b"too short".to_vec(),
            issuer: None,
            audience: None,
        };
        assert!(matches!(Auth::new(short), Err(Error::Config(_))));
    }

    #[test]
    fn minted_tokens_verify_and_carry_the_role() {
        let a = auth();
        let t = a
            .mint("w1", Role::Worker, Some("echo"), Duration::from_secs(60))
            .unwrap();
        let p = a.verify(&t).unwrap();
        assert_eq!(
            p,
            Principal {
                sub: "w1".into(),
                role: Role::Worker,
                agent: Some("echo".into())
            }
        );
        assert!(
            a.mint("w1", Role::Worker, None, Duration::from_secs(60))
                .is_err()
        );
        assert!(
            a.mint("bad sub", Role::User, None, Duration::from_secs(60))
                .is_err()
        );
    }

    #[test]
    fn tokens_from_another_secret_or_audience_are_refused() {
        let t = auth()
            .mint("u", Role::User, None, Duration::from_secs(60))
            .unwrap();
        let other = Auth::new(AuthConfig {
            secret: b"another-secret-another-secret-xx".to_vec(),
            issuer: Some("taskherd-test".into()),
            audience: Some("api".into()),
        })
        .unwrap();
        assert_eq!(
            other.verify(&t),
            Err(AuthError::Invalid("bad signature".into()))
        );
        let other_aud = Auth::new(AuthConfig {
            audience: Some("elsewhere".into()),
            ..auth().config
        })
        .unwrap();
        assert_eq!(
            other_aud.verify(&t),
            Err(AuthError::Invalid("wrong audience".into()))
        );
    }
}
