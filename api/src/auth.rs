//! Bearer tokens: JWTs whose `sub` is the user id and whose `role` claim
//! (`user` when absent, `service`, `admin`) says what the caller may do.
//! HS256 with `REELAY_JWT_SECRET`, and RS256 when `REELAY_JWT_PUBLIC_KEY`
//! holds a PEM public key.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use axum::{extract::FromRequestParts, http::request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reelay_shared::UserId;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{error::ApiError, state::AppState};

/// What a token's bearer is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// An app user: sees and changes only their own videos.
    #[default]
    User,
    /// Another service (the feed): reads links of users' profile videos.
    Service,
    /// Manages onboarding content and moderation decisions.
    Admin,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: Uuid,
    pub exp: u64,
    /// Issued at: optional (third-party tokens often have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default)]
    pub role: Role,
}

/// Verifies HS256 tokens, and RS256 ones when a public key is configured:
/// `exp` and `sub` required, `nbf` honoured when present, both with
/// `leeway` for the issuer's clock.
///
/// Tokens that verified are remembered until they expire: an app polling
/// through an upload sends the same token each time, and its bytes are
/// enough to know the answer again (a hash lookup instead of a signature).
#[derive(Clone)]
pub struct Verifier {
    hs256: DecodingKey,
    rs256: Option<DecodingKey>,
    leeway: std::time::Duration,
    verified: Arc<Mutex<HashMap<Box<str>, Claims>>>,
}

/// Verified tokens remembered at most; past it the memory starts over.
const VERIFIED_TOKENS: usize = 10_000;
/// Longer tokens (an issuer's large claims) are verified every time, so
/// the memory stays within a few MiB.
const MAX_REMEMBERED_TOKEN: usize = 2048;

impl Verifier {
    pub fn new(
        secret: &str,
        rsa_public_pem: Option<&str>,
        leeway: std::time::Duration,
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            hs256: DecodingKey::from_secret(secret.as_bytes()),
            rs256: rsa_public_pem
                .map(|pem| DecodingKey::from_rsa_pem(pem.as_bytes()))
                .transpose()?,
            leeway,
            verified: Arc::default(),
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let now = jsonwebtoken::get_current_timestamp();
        let expired = |claims: &Claims| claims.exp.saturating_add(self.leeway.as_secs()) < now;
        if let Some(claims) = self.verified.lock().expect("tokens").get(token)
            && !expired(claims)
        {
            return Ok(claims.clone());
        }
        let claims = self.check(token)?;
        if token.len() > MAX_REMEMBERED_TOKEN {
            return Ok(claims);
        }
        let mut verified = self.verified.lock().expect("tokens");
        if verified.len() >= VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    /// The signature and the claims' times, checked.
    fn check(&self, token: &str) -> Result<Claims, ApiError> {
        let invalid = || ApiError::Unauthorized("the bearer token is invalid or expired");
        let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
        let key = match header.alg {
            Algorithm::HS256 => &self.hs256,
            Algorithm::RS256 => self.rs256.as_ref().ok_or(ApiError::Unauthorized(
                "RS256 tokens are not accepted: no public key is configured",
            ))?,
            _ => {
                return Err(ApiError::Unauthorized(
                    "tokens must be signed with HS256 or RS256",
                ));
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.leeway.as_secs();
        jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map(|data| data.claims)
            .map_err(|_| invalid())
    }
}

/// Signs an HS256 token for `user` with `role`, valid for `ttl_secs` (the
/// `token` command, tests).
pub fn issue_with_role(
    secret: &str,
    user: Uuid,
    role: Role,
    ttl_secs: u64,
) -> anyhow::Result<String> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = Claims {
        sub: user,
        iat: Some(now),
        exp: now + ttl_secs,
        role,
    };
    Ok(jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )?)
}

/// An HS256 user token.
pub fn issue(secret: &str, user: Uuid, ttl_secs: u64) -> anyhow::Result<String> {
    issue_with_role(secret, user, Role::User, ttl_secs)
}

/// Any authenticated caller.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub user: UserId,
    pub role: Role,
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Verified once per request: the rate limit keys by it first.
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(*caller);
        }
        let header =
            parts
                .headers
                .get(axum::http::header::AUTHORIZATION)
                .ok_or(ApiError::Unauthorized(
                    "an Authorization: Bearer token is required",
                ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ApiError::Unauthorized(
                "the Authorization header must be 'Bearer <token>'",
            ))?;
        let claims = state.verifier.verify(token.trim())?;
        let caller = Self {
            user: UserId(claims.sub),
            role: claims.role,
        };
        parts.extensions.insert(caller);
        Ok(caller)
    }
}

/// A caller who may be anonymous: no Authorization header is `None`; a
/// header with a token that does not verify is still 401.
#[derive(Clone, Copy, Debug)]
pub struct MaybeCaller(pub Option<Caller>);

impl FromRequestParts<AppState> for MaybeCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if !parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION)
        {
            return Ok(Self(None));
        }
        Caller::from_request_parts(parts, state)
            .await
            .map(|c| Self(Some(c)))
    }
}

/// A user or an admin: someone who reacts, comments, keeps bookmarks and a
/// watch history. A service token gets 403.
#[derive(Clone, Copy, Debug)]
pub struct Person(pub Caller);

impl FromRequestParts<AppState> for Person {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.role {
            Role::User | Role::Admin => Ok(Self(caller)),
            Role::Service => Err(ApiError::Forbidden(
                "service tokens may not use this endpoint",
            )),
        }
    }
}

/// A caller who owns videos: a user or an admin (admins upload onboarding
/// content). A service token gets 403.
#[derive(Clone, Copy, Debug)]
pub struct AuthUser(pub UserId);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Person(caller) = Person::from_request_parts(parts, state).await?;
        Ok(Self(caller.user))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_token_carries_its_role_and_an_unknown_role_is_refused() {
        let verifier = Verifier::new("s", None, Duration::from_secs(60)).unwrap();
        let user = Uuid::new_v4();
        let admin = verifier
            .verify(&issue_with_role("s", user, Role::Admin, 60).unwrap())
            .unwrap();
        assert_eq!((admin.sub, admin.role), (user, Role::Admin));
        assert_eq!(
            verifier
                .verify(&issue("s", user, 60).unwrap())
                .unwrap()
                .role,
            Role::User
        );
        assert!(
            verifier
                .verify(&issue("other secret", user, 60).unwrap())
                .is_err()
        );

        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let odd = serde_json::json!({ "sub": user, "iat": now, "exp": now + 60, "role": "root" });
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &odd,
            &EncodingKey::from_secret(b"s"),
        )
        .unwrap();
        assert!(verifier.verify(&token).is_err());
    }

    #[test]
    fn a_remembered_token_still_expires_and_a_tampered_one_is_not_remembered() {
        let verifier = Verifier::new("s", None, Duration::ZERO).unwrap();
        let user = Uuid::new_v4();
        let token = issue("s", user, 1).unwrap();
        assert_eq!(verifier.verify(&token).unwrap().sub, user);
        assert_eq!(
            verifier.verify(&token).unwrap().sub,
            user,
            "again, remembered"
        );
        // The same claims, another signature: not the remembered bytes.
        let (signed, _) = token.rsplit_once('.').unwrap();
        assert!(verifier.verify(&format!("{signed}.AAAA")).is_err());
        std::thread::sleep(Duration::from_millis(2100));
        assert!(
            verifier.verify(&token).is_err(),
            "expired, though remembered"
        );
    }

    #[test]
    fn nbf_is_honoured_iat_is_optional_and_the_leeway_is_the_setting() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let user = Uuid::new_v4();
        let token = |claims: serde_json::Value| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(b"s"),
            )
            .unwrap()
        };
        let strict = Verifier::new("s", None, Duration::ZERO).unwrap();
        let lenient = Verifier::new("s", None, Duration::from_secs(60)).unwrap();
        let not_yet = token(serde_json::json!({ "sub": user, "exp": now + 600, "nbf": now + 300 }));
        assert!(strict.verify(&not_yet).is_err(), "nbf in the future");
        assert!(lenient.verify(&not_yet).is_err(), "nbf past the leeway");
        let no_iat = token(serde_json::json!({ "sub": user, "exp": now + 60 }));
        assert_eq!(strict.verify(&no_iat).unwrap().sub, user, "iat is optional");
        let just_expired = token(serde_json::json!({ "sub": user, "exp": now - 30 }));
        assert!(strict.verify(&just_expired).is_err());
        assert!(lenient.verify(&just_expired).is_ok(), "within the leeway");
        let long_expired = token(serde_json::json!({ "sub": user, "exp": now - 120 }));
        assert!(lenient.verify(&long_expired).is_err());
    }
}

/// An admin (the operator console); anyone else authenticated gets 403.
#[derive(Clone, Copy, Debug)]
pub struct Admin(pub UserId);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.role {
            Role::Admin => Ok(Self(caller.user)),
            _ => Err(ApiError::Forbidden("this needs an admin token")),
        }
    }
}

/// A service (the fleet backend, say) or an admin; a user gets 403.
#[derive(Clone, Copy, Debug)]
pub struct ServiceOrAdmin(pub Caller);

impl FromRequestParts<AppState> for ServiceOrAdmin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        match caller.role {
            Role::Service | Role::Admin => Ok(Self(caller)),
            Role::User => Err(ApiError::Forbidden("this needs a service or admin token")),
        }
    }
}
