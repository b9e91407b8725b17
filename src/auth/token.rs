//! Tokens: verify, mint, cache. What a verified caller may do is decided in
//! [`super::policy`], not here.
//!
//! Tokens are JWTs signed with HS256 and the node's `JWT_SECRET` (at least 32
//! bytes). Verification pins the algorithm (so `alg: none` and RS/ES tokens
//! are refused), requires `exp` and `sub`, checks `nbf` when present, and
//! checks `iss` / `aud` when configured. Clock leeway: [`LEEWAY_S`] seconds.
//!
//! Verified tokens are cached (at most [`MAX_CACHED_TOKENS`], all forgotten
//! when full) with their principal, `exp` and `nbf`, so a client's repeated
//! requests skip the signature and JSON work; a cached token is still checked
//! against the clock (same leeway) on every use. Refused tokens are never
//! cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Principal, Role};
use crate::error::{Error, Result};
use crate::task::{DEFAULT_MAX_ID_LEN, OWNER_EXTRA_CHARS, validate_ident};

/// Shortest accepted `JWT_SECRET` (bytes).
pub const MIN_SECRET_BYTES: usize = 32;
/// Clock skew tolerated on `exp` and `nbf` (seconds).
pub const LEEWAY_S: u64 = 5;
/// Longest lifetime `taskherd token` mints (one year).
pub const MAX_TTL: Duration = Duration::from_secs(366 * 86_400);
/// Most verified tokens a node remembers; past it the cache starts over.
pub const MAX_CACHED_TOKENS: usize = 10_000;

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
    pub aud: Option<Audience>,
}

/// The `aud` claim: one audience or a list of them (RFC 7519, 4.1.3). A
/// configured audience must be the one or among the list.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "api"`
    One(String),
    /// `"aud": ["api", "other"]`
    Many(Vec<String>),
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
    /// Tokens that verified (shared by clones: same secret and rules).
    verified: Arc<TokenCache>,
}

/// What a verified token stands for, and when it stops being valid.
#[derive(Clone, Debug)]
struct Verified {
    principal: Principal,
    exp: u64,
    nbf: Option<u64>,
}

impl Verified {
    /// The principal, if the token is still valid at `now` (the same checks
    /// and leeway as jsonwebtoken's).
    fn at(&self, now: u64) -> Result<Principal, AuthError> {
        if self.exp.saturating_add(LEEWAY_S) < now {
            return Err(AuthError::Expired);
        }
        if self
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_S))
        {
            return Err(AuthError::NotYetValid);
        }
        Ok(self.principal.clone())
    }
}

/// A bounded map of verified tokens.
struct TokenCache {
    cap: usize,
    tokens: Mutex<HashMap<String, Verified>>,
}

impl TokenCache {
    fn new(cap: usize) -> Self {
        Self {
            cap,
            tokens: Mutex::new(HashMap::new()),
        }
    }

    /// The cached verdict on `token` at `now`; an expired entry is dropped.
    fn get(&self, token: &str, now: u64) -> Option<Result<Verified, AuthError>> {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        let verified = tokens.get(token)?;
        let verdict = verified.at(now).map(|_| verified.clone());
        if verdict.as_ref().err() == Some(&AuthError::Expired) {
            tokens.remove(token);
        }
        Some(verdict)
    }

    fn insert(&self, token: &str, verified: Verified) {
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if tokens.len() >= self.cap && !tokens.contains_key(token) {
            tokens.clear();
        }
        tokens.insert(token.to_string(), verified);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
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
            verified: Arc::new(TokenCache::new(MAX_CACHED_TOKENS)),
        })
    }

    /// The principal a bearer token stands for.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        self.verify_at(token, unix_now()).map(|v| v.principal)
    }

    /// [`Auth::verify`], and when the token stops being valid: the first
    /// Unix second at which it is refused (past `exp` and the leeway). A
    /// connection that outlives its token is closed then.
    pub fn verify_until(&self, token: &str) -> Result<(Principal, u64), AuthError> {
        self.verify_at(token, unix_now())
            .map(|v| (v.principal, v.exp.saturating_add(LEEWAY_S + 1)))
    }

    /// [`Auth::verify`], with `now` (Unix seconds) for the checks of a cached
    /// token; a token seen for the first time is checked against the clock.
    fn verify_at(&self, token: &str, now: u64) -> Result<Verified, AuthError> {
        if let Some(verdict) = self.verified.get(token, now) {
            return verdict;
        }
        let verified = self.decode(token)?;
        self.verified.insert(token, verified.clone());
        Ok(verified)
    }

    /// Checks the signature and the claims.
    fn decode(&self, token: &str) -> Result<Verified, AuthError> {
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
        let (exp, nbf) = (claims.exp, claims.nbf);
        let principal = principal_from(claims).map_err(AuthError::Invalid)?;
        Ok(Verified {
            principal,
            exp,
            nbf,
        })
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
            aud: self.config.audience.clone().map(Audience::One),
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

    fn signed(a: &Auth, aud: serde_json::Value) -> String {
        let claims = serde_json::json!({
            "sub": "u", "role": "user", "exp": unix_now() + 60,
            "iss": "taskherd-test", "aud": aud,
        });
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &a.encoding).unwrap()
    }

    #[test]
    fn an_audience_list_is_accepted_when_it_names_ours() {
        let a = auth();
        assert_eq!(
            a.verify(&signed(&a, serde_json::json!(["other", "api"])))
                .unwrap()
                .sub,
            "u"
        );
        assert_eq!(
            a.verify(&signed(&a, serde_json::json!(["other", "elsewhere"]))),
            Err(AuthError::Invalid("wrong audience".into()))
        );
        assert_eq!(
            a.verify(&signed(&a, serde_json::json!([]))),
            Err(AuthError::Invalid("wrong audience".into()))
        );
        assert!(a.verify(&signed(&a, serde_json::json!(7))).is_err());
    }

    #[test]
    fn cached_tokens_expire_with_the_same_leeway() {
        let a = auth();
        let t = a
            .mint("u", Role::User, None, Duration::from_secs(60))
            .unwrap();
        let now = unix_now();
        assert_eq!(a.verify(&t).unwrap().sub, "u");
        assert_eq!(a.verified.len(), 1, "cached");
        let exp = a.verified.tokens.lock().unwrap()[t.as_str()].exp;
        assert!(exp >= now + 60);
        // Within the leeway: still valid, from the cache.
        assert_eq!(a.verify_at(&t, exp + LEEWAY_S).unwrap().principal.sub, "u");
        // Past it: refused as expired, and forgotten.
        assert_eq!(
            a.verify_at(&t, exp + LEEWAY_S + 1).err(),
            Some(AuthError::Expired)
        );
        assert_eq!(a.verified.len(), 0);
        // Clones share the cache.
        let b = a.clone();
        b.verify(&t).unwrap();
        assert_eq!(a.verified.len(), 1);
    }

    #[test]
    fn refused_tokens_are_not_cached_and_the_cache_is_bounded() {
        let a = auth();
        let t = a
            .mint("u", Role::User, None, Duration::from_secs(60))
            .unwrap();
        // One character of the signature changed.
        let i = t.len() - 10;
        let c = if &t[i..=i] == "A" { "B" } else { "A" };
        let forged = format!("{}{c}{}", &t[..i], &t[i + 1..]);
        assert!(a.verify(&forged).is_err());
        assert!(a.verify(&forged).is_err());
        assert_eq!(a.verified.len(), 0);

        let cache = TokenCache::new(2);
        let v = Verified {
            principal: a.verify(&t).unwrap(),
            exp: u64::MAX,
            nbf: Some(100),
        };
        cache.insert("t1", v.clone());
        cache.insert("t2", v.clone());
        cache.insert("t2", v.clone());
        assert_eq!(cache.len(), 2);
        cache.insert("t3", v.clone());
        assert_eq!(cache.len(), 1, "full: starts over");
        assert!(cache.get("t3", 200).unwrap().is_ok());
        assert!(cache.get("t1", 200).is_none());
        assert_eq!(
            cache.get("t3", 100 - LEEWAY_S - 1).map(|v| v.err()),
            Some(Some(AuthError::NotYetValid))
        );
    }
}
