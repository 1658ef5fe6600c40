//! HS256 JSON Web Tokens.
//!
//! Verification accepts HS256 only, requires `exp`, `iat`, `iss`, `aud` and
//! `sub`, honours `nbf`, and allows [`LEEWAY_SECONDS`] of clock skew.
//! `alg: none` and every other algorithm are rejected whatever the signature.

use std::sync::Arc;

use axum::{
    extract::{FromRef, FromRequestParts},
    response::{IntoResponse, Response},
};
use http::{HeaderValue, StatusCode, header, request::Parts};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::Error;

/// Clock skew tolerated on `exp`, `nbf` and `iat`, in seconds.
pub const LEEWAY_SECONDS: u64 = 30;

/// Shortest signing secret accepted outside the embedded mode (256 bits, the
/// HMAC-SHA256 output size, as RFC 7518 section 3.2 requires).
pub const MIN_SECRET_BYTES: usize = 32;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    pub email: String,
    pub role: Role,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Expires at, Unix seconds.
    pub exp: u64,
    pub iss: String,
    pub aud: String,
}

impl Claims {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Signing and verification keys with the issuer, audience and lifetime they go with.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    pub issuer: String,
    pub audience: String,
    /// Token lifetime in seconds.
    pub ttl_seconds: u64,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The secret stays out of debug output and logs.
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("ttl_seconds", &self.ttl_seconds)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &[u8], issuer: &str, audience: &str, ttl_seconds: u64) -> JwtKeys {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        JwtKeys {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_seconds,
        }
    }

    /// Issues a token for a user, valid from now for the configured lifetime.
    pub fn issue(&self, user_id: &str, email: &str, role: Role) -> (String, Claims) {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = Claims {
            sub: user_id.to_owned(),
            email: email.to_owned(),
            role,
            iat: now,
            nbf: Some(now),
            exp: now + self.ttl_seconds,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        (self.sign(&claims), claims)
    }

    /// Signs arbitrary claims; tests use it to make expired or foreign tokens.
    pub fn sign(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of serializable claims does not fail")
    }

    /// Verifies a token and returns its claims.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidToken`] for any token that is malformed, not HS256,
    /// wrongly signed, expired, not yet valid, or for another issuer or audience.
    pub fn verify(&self, token: &str) -> Result<Claims, Error> {
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(|err| Error::InvalidToken(err.to_string()))
    }
}

/// The claims of a request's valid bearer token.
///
/// Handlers that take this argument answer 401 with
/// `WWW-Authenticate: Bearer error="invalid_token"` before they run when the
/// token is missing or invalid.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl<S> FromRequestParts<S> for Authenticated
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<JwtKeys>::from_ref(state);
        let token = bearer_token(parts).ok_or(AuthRejection::Missing)?;
        match keys.verify(token) {
            Ok(claims) => Ok(Authenticated(claims)),
            Err(err) => {
                tracing::debug!(cause = %err, "bearer token rejected");
                Err(AuthRejection::Invalid)
            }
        }
    }
}

/// Reads the token of an `Authorization: Bearer` header.
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim())
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthRejection {
    /// No bearer token: RFC 6750 section 3.1 sends the challenge without an error code.
    Missing,
    /// A token that failed verification.
    Invalid,
}

impl IntoResponse for AuthRejection {
    fn into_response(self) -> Response {
        let (challenge, message) = match self {
            AuthRejection::Missing => (
                r#"Bearer realm="audio-alchemist""#,
                "A bearer token is required. Get one from POST /login.",
            ),
            AuthRejection::Invalid => (
                r#"Bearer realm="audio-alchemist", error="invalid_token""#,
                "The bearer token is invalid or expired. Get a new one from POST /login.",
            ),
        };
        let body = serde_json::json!({ "error": "unauthorized", "message": message });
        let mut response = (StatusCode::UNAUTHORIZED, axum::Json(body)).into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

/// Default `iss` and `aud` of tokens.
pub const DEFAULT_ISSUER: &str = "audio-alchemist";
/// Default token lifetime in seconds.
pub const DEFAULT_TTL_SECONDS: u64 = 3600;

/// Token settings read from `JWT_SECRET`, `JWT_ISSUER`, `JWT_AUDIENCE` and `JWT_TTL_SECONDS`.
pub struct JwtConfig {
    pub secret: Vec<u8>,
    pub issuer: String,
    pub audience: String,
    pub ttl_seconds: u64,
}

impl JwtConfig {
    /// Reads the token settings; `JWT_SECRET` is required and must have at
    /// least [`MIN_SECRET_BYTES`] bytes.
    pub fn read(reader: &mut crate::config::Reader<'_>) -> Option<JwtConfig> {
        let secret = reader.required("JWT_SECRET", "the HS256 signing secret, at least 32 bytes");
        if let Some(secret) = &secret
            && secret.len() < MIN_SECRET_BYTES
        {
            reader.problem(format!(
                    "JWT_SECRET has {} bytes; use at least {MIN_SECRET_BYTES} random bytes, for example from `openssl rand -base64 48`",
                    secret.len()
                ));
        }
        let issuer = reader
            .optional("JWT_ISSUER")
            .unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
        let audience = reader
            .optional("JWT_AUDIENCE")
            .unwrap_or_else(|| DEFAULT_ISSUER.to_owned());
        let ttl_seconds = reader.parse_or("JWT_TTL_SECONDS", DEFAULT_TTL_SECONDS);
        if ttl_seconds == 0 {
            reader.problem("JWT_TTL_SECONDS must be at least 1");
        }
        Some(JwtConfig {
            secret: secret?.into_bytes(),
            issuer,
            audience,
            ttl_seconds,
        })
    }

    /// Reads the token settings from `env` alone.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every missing or invalid variable.
    pub fn from_env(env: &dyn crate::config::Env) -> Result<JwtConfig, Error> {
        let mut reader = crate::config::Reader::new(env);
        let config = JwtConfig::read(&mut reader);
        reader.finish()?;
        Ok(config.expect("finish() fails when JWT_SECRET is missing"))
    }
}

impl From<&JwtConfig> for JwtKeys {
    fn from(config: &JwtConfig) -> JwtKeys {
        JwtKeys::new(
            &config.secret,
            &config.issuer,
            &config.audience,
            config.ttl_seconds,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    #[test]
    fn short_secret_stops_startup() {
        let env = HashMap::from([("JWT_SECRET", "only-twenty-six-bytes-long")]);
        let err = JwtConfig::from_env(&env)
            .err()
            .expect("a short secret is rejected")
            .to_string();
        assert!(err.contains("JWT_SECRET has 26 bytes"), "{err}");
        assert!(err.contains("at least 32"), "{err}");
    }

    #[test]
    fn missing_secret_stops_startup() {
        let env: HashMap<&str, &str> = HashMap::new();
        let err = JwtConfig::from_env(&env)
            .err()
            .expect("a missing secret is rejected")
            .to_string();
        assert!(err.contains("JWT_SECRET is not set"), "{err}");
    }

    #[test]
    fn long_secret_round_trips() {
        let env = HashMap::from([
            ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("JWT_TTL_SECONDS", "60"),
        ]);
        let keys = JwtKeys::from(&JwtConfig::from_env(&env).unwrap());
        let (token, claims) = keys.issue("user-1", "a@example.com", Role::User);
        assert_eq!(keys.verify(&token).unwrap(), claims);
        assert_eq!(claims.exp - claims.iat, 60);
    }
}
