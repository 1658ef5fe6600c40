//! The login function: `POST /login` with HTTP Basic returns a bearer token,
//! `POST /validate` returns the claims of a valid token.
//!
//! # Layout
//!
//! - [`app`] builds the router.
//! - [`limiter`] slows repeated failures for one account.
//! - [`Error`] is the one error type of this crate, mapped to HTTP once.
//!
//! A wrong password and an unknown email get the same answer in about the
//! same time, because unknown emails are checked against a dummy hash.

pub mod limiter;

use std::{sync::Arc, time::Duration};

use alchemist_runtime::{
    jwt::{Authenticated, Claims, JwtKeys},
    password,
    serve::{Readiness, health_routes},
    store::Store,
};
use axum::{
    Json, Router,
    extract::{FromRef, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::Engine;
use serde::Serialize;
use tracing::{error, info};

use crate::limiter::FailureLimiter;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub keys: Arc<JwtKeys>,
    pub limiter: Arc<FailureLimiter>,
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

/// Errors of the login function.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No HTTP Basic credentials, or credentials that cannot be decoded.
    #[error("HTTP Basic credentials are required")]
    MissingCredentials,

    /// Unknown email or wrong password; the two are not told apart.
    #[error("invalid email or password")]
    InvalidCredentials,

    /// Too many failures for this account recently.
    #[error("too many failed logins; retry after {0:?}")]
    TooManyAttempts(Duration),

    #[error(transparent)]
    Runtime(#[from] alchemist_runtime::Error),
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Error::MissingCredentials => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Send the email and password with HTTP Basic authentication.".to_owned(),
            ),
            Error::InvalidCredentials => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "Invalid email or password.".to_owned(),
            ),
            Error::TooManyAttempts(wait) => (
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                format!(
                    "Too many failed logins for this account. Try again in {} seconds.",
                    wait.as_secs().max(1)
                ),
            ),
            Error::Runtime(err) => {
                error!(cause = %err, "login failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error.".to_owned(),
                )
            }
        };
        let mut response = (
            status,
            Json(serde_json::json!({ "error": code, "message": message })),
        )
            .into_response();
        let headers = response.headers_mut();
        match &self {
            Error::MissingCredentials | Error::InvalidCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Basic realm="audio-alchemist", charset="UTF-8""#),
                );
            }
            Error::TooManyAttempts(wait) => {
                let seconds = wait.as_secs().max(1).to_string();
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_str(&seconds).expect("digits are a valid header value"),
                );
            }
            Error::Runtime(_) => {}
        }
        response
    }
}

/// An OAuth2-style token response (RFC 6749 section 5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    /// Lifetime in seconds.
    pub expires_in: u64,
}

/// The router of the login function, with `/healthz`, `/readyz`,
/// `/metrics` and the HTTP request metrics.
pub fn app(state: AppState) -> Router {
    let readiness = Readiness {
        store: Some(state.store.clone()),
        blobs: None,
    };
    alchemist_runtime::metrics::record_http(routes(state).merge(health_routes(readiness)))
}

/// The login function's own routes, without the health routes, for
/// serving several functions on one port.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/login", post(login))
        .route("/validate", post(validate))
        .with_state(state)
}

/// Decodes `Authorization: Basic` into an email and a password.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (email, password) = text.split_once(':')?;
    Some((email.trim().to_lowercase(), password.to_owned()))
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<TokenResponse>, Error> {
    let (email, password) = basic_credentials(&headers).ok_or(Error::MissingCredentials)?;
    if let Some(wait) = state.limiter.blocked_for(&email) {
        return Err(Error::TooManyAttempts(wait));
    }

    let user = state.store.user_by_email(&email).await?;
    let verified = password::verify(
        password,
        user.as_ref().map(|user| user.password_hash.clone()),
    )
    .await?;
    let Some(user) = user.filter(|_| verified) else {
        state.limiter.record_failure(&email);
        info!("login rejected");
        return Err(Error::InvalidCredentials);
    };

    state.limiter.record_success(&email);
    let (token, _claims) = state.keys.issue(&user.id, &user.email, user.role);
    info!(user_id = %user.id, "token issued");
    Ok(Json(TokenResponse {
        access_token: token,
        token_type: "Bearer",
        expires_in: state.keys.ttl_seconds,
    }))
}

async fn validate(Authenticated(claims): Authenticated) -> Json<Claims> {
    Json(claims)
}

/// Reads the configuration from `env`, connects, and serves on `$PORT` until
/// `shutdown` completes.
///
/// # Errors
///
/// Every invalid variable at once, or the error of connecting or serving.
pub async fn run(
    env: &dyn alchemist_runtime::config::Env,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    use anyhow::Context;

    let mut reader = alchemist_runtime::config::Reader::new(env);
    let jwt = alchemist_runtime::jwt::JwtConfig::read(&mut reader);
    let settings = alchemist_runtime::deps::DependencySettings::read(&mut reader, false);
    reader.finish()?;
    let (Some(jwt), Some(settings)) = (jwt, settings) else {
        unreachable!("finish() fails when a required variable is missing")
    };
    let deps = settings.connect().await?;
    password::warm_up();

    let state = AppState {
        store: deps.store,
        keys: Arc::new(JwtKeys::from(&jwt)),
        limiter: Arc::new(FailureLimiter::new()),
    };
    let addr = alchemist_runtime::serve::listen_addr(deps.bind, deps.port);
    alchemist_runtime::serve::serve(app(state), addr, shutdown)
        .await
        .context("serving the login function failed")
}
