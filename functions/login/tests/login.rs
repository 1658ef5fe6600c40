//! HTTP tests of the login function, in-process, on a temporary SQLite store:
//! issuing tokens, rejecting bad credentials alike, throttling, and
//! rejecting forged or invalid tokens on `/validate`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alchemist_login::{AppState, app, limiter::FREE_FAILURES, limiter::FailureLimiter};
use alchemist_runtime::{
    jwt::{Claims, JwtKeys, LEEWAY_SECONDS, Role},
    store::User,
    testing::{self, TEST_SECRET, TempDeps},
};
use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode, header},
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD},
};
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use sha2::{Sha256, Sha384};
use tower::ServiceExt;

const EMAIL: &str = "ada@example.com";
const PASSWORD: &str = "correct horse battery staple";

struct Fixture {
    deps: TempDeps,
    keys: Arc<JwtKeys>,
    limiter: Arc<FailureLimiter>,
    router: Router,
    user: User,
}

/// A status, headers and JSON body (`Null` when the body is empty).
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Reply {
    fn header(&self, name: header::HeaderName) -> &str {
        self.headers
            .get(&name)
            .map(|value| value.to_str().unwrap())
            .unwrap_or_default()
    }
}

async fn fixture() -> Fixture {
    let deps = testing::temp_deps().await;
    let user = testing::add_user(deps.store.as_ref(), EMAIL, PASSWORD, Role::User).await;
    let keys = Arc::new(testing::keys());
    let limiter = Arc::new(FailureLimiter::new());
    let router = app(AppState {
        store: deps.store.clone(),
        keys: keys.clone(),
        limiter: limiter.clone(),
    });
    Fixture {
        deps,
        keys,
        limiter,
        router,
        user,
    }
}

impl Fixture {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn login(&self, email: &str, password: &str) -> Reply {
        let credentials = STANDARD.encode(format!("{email}:{password}"));
        self.login_with(Some(&format!("Basic {credentials}"))).await
    }

    async fn login_with(&self, authorization: Option<&str>) -> Reply {
        let mut request = Request::post("/login");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    async fn validate(&self, authorization: Option<&str>) -> Reply {
        let mut request = Request::post("/validate");
        if let Some(value) = authorization {
            request = request.header(header::AUTHORIZATION, value);
        }
        self.send(request.body(Body::empty()).unwrap()).await
    }

    /// Claims that the keys accept: the test user, valid from now for ten minutes.
    fn valid_claims(&self) -> Value {
        let now = unix_now();
        json!({
            "sub": self.user.id,
            "email": self.user.email,
            "role": "user",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            "iss": self.keys.issuer,
            "aud": self.keys.audience,
        })
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Builds a JWT by hand: base64url header and claims, signed with HMAC
/// (`HS256`, `HS384`) or with an empty signature (`none`).
fn hand_token(alg: &str, secret: &[u8], claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({ "alg": alg, "typ": "JWT" }).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let signature = match alg {
        "HS256" => {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        "HS384" => {
            let mut mac = Hmac::<Sha384>::new_from_slice(secret).unwrap();
            mac.update(signing_input.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        "none" => Vec::new(),
        other => panic!("hand_token does not sign with {other}"),
    };
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// Returns `claims` with `field` removed.
fn without(mut claims: Value, field: &str) -> Value {
    claims.as_object_mut().unwrap().remove(field);
    claims
}

/// Returns `claims` with `field` set to `value`.
fn with(mut claims: Value, field: &str, value: Value) -> Value {
    claims[field] = value;
    claims
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::test]
async fn login_returns_bearer_token() {
    let fixture = fixture().await;

    let reply = fixture.login(EMAIL, PASSWORD).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["token_type"], "Bearer");
    assert_eq!(reply.body["expires_in"], fixture.keys.ttl_seconds);
    let token = reply.body["access_token"]
        .as_str()
        .expect("access_token is a string");
    let claims: Claims = fixture
        .keys
        .verify(token)
        .expect("the issued token verifies");
    let now = unix_now();
    assert_eq!(claims.sub, fixture.user.id);
    assert_eq!(claims.email, EMAIL);
    assert_eq!(claims.role, Role::User);
    assert_eq!(claims.iss, fixture.keys.issuer);
    assert_eq!(claims.aud, fixture.keys.audience);
    assert!(
        claims.iat.abs_diff(now) <= 5,
        "iat {} is not now ({now})",
        claims.iat
    );
    assert_eq!(claims.exp, claims.iat + fixture.keys.ttl_seconds);
}

#[tokio::test]
async fn admin_token_carries_admin_role() {
    let fixture = fixture().await;
    testing::add_user(
        fixture.deps.store.as_ref(),
        "root@example.com",
        PASSWORD,
        Role::Admin,
    )
    .await;

    let reply = fixture.login("root@example.com", PASSWORD).await;

    assert_eq!(reply.status, StatusCode::OK);
    let token = reply.body["access_token"].as_str().unwrap();
    assert_eq!(fixture.keys.verify(token).unwrap().role, Role::Admin);
}

#[tokio::test]
async fn email_case_is_ignored() {
    let fixture = fixture().await;

    let reply = fixture.login(" Ada@Example.COM ", PASSWORD).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[tokio::test]
async fn bad_credentials_are_indistinguishable() {
    let fixture = fixture().await;

    let wrong_password = fixture.login(EMAIL, "not the password").await;
    let unknown_email = fixture.login("nobody@example.com", PASSWORD).await;

    assert_eq!(wrong_password.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_email.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong_password.body, unknown_email.body);
    assert!(
        wrong_password
            .header(header::WWW_AUTHENTICATE)
            .starts_with("Basic "),
        "{:?}",
        wrong_password.headers
    );
    assert_eq!(
        wrong_password.header(header::WWW_AUTHENTICATE),
        unknown_email.header(header::WWW_AUTHENTICATE)
    );
    assert!(wrong_password.body.get("access_token").is_none());
}

#[tokio::test]
async fn bad_authorization_header_is_rejected() {
    let fixture = fixture().await;
    let no_colon = format!("Basic {}", STANDARD.encode(EMAIL));
    let not_utf8 = format!("Basic {}", STANDARD.encode([0xff, 0xfe, b':', 0xfd]));
    let cases = [
        ("no header", None),
        ("empty header", Some("")),
        ("scheme only", Some("Basic")),
        ("not base64", Some("Basic !!!not-base64!!!")),
        ("no colon", Some(no_colon.as_str())),
        ("not UTF-8", Some(not_utf8.as_str())),
        ("bearer scheme", Some("Bearer abc")),
    ];

    for (case, authorization) in cases {
        let reply = fixture.login_with(authorization).await;

        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
        assert!(
            reply.header(header::WWW_AUTHENTICATE).starts_with("Basic "),
            "{case}: {:?}",
            reply.headers
        );
    }
}

#[tokio::test]
async fn repeated_failures_are_throttled() {
    let fixture = fixture().await;
    testing::add_user(
        fixture.deps.store.as_ref(),
        "grace@example.com",
        PASSWORD,
        Role::User,
    )
    .await;

    for attempt in 1..=FREE_FAILURES {
        let reply = fixture.login(EMAIL, "wrong").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "failure {attempt}");
    }
    let throttled = fixture.login(EMAIL, PASSWORD).await;
    let other_case = fixture.login("ADA@example.com", PASSWORD).await;
    let other_account = fixture.login("grace@example.com", PASSWORD).await;

    // Even the right password waits until the block ends.
    assert_eq!(throttled.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after: u64 = throttled
        .header(header::RETRY_AFTER)
        .parse()
        .expect("Retry-After is a number of seconds");
    assert!(retry_after >= 1, "Retry-After {retry_after}");
    assert!(throttled.body.get("access_token").is_none());
    assert_eq!(other_case.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(other_account.status, StatusCode::OK);
}

#[tokio::test]
async fn sql_injection_emails_are_rejected() {
    let fixture = fixture().await;
    let emails = [
        "' OR '1'='1",
        "' OR 1=1 --",
        "ada@example.com' --",
        "ada@example.com' OR 'x'='x",
        "x'; DROP TABLE users; --",
        "\" OR \"\"=\"",
        "%' OR email LIKE '%",
    ];

    for email in emails {
        let reply = fixture.login(email, PASSWORD).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "email {email}");
    }
    let password_injection = fixture.login(EMAIL, "' OR '1'='1").await;

    assert_eq!(password_injection.status, StatusCode::UNAUTHORIZED);
    assert_eq!(fixture.deps.store.count_users().await.unwrap(), 1);
    assert_eq!(fixture.login(EMAIL, PASSWORD).await.status, StatusCode::OK);
}

/// An unknown email is checked against a dummy hash, so it costs as much as a
/// wrong password. Without it, the time of a login would reveal which emails
/// have accounts.
#[tokio::test]
async fn unknown_email_costs_like_wrong_password() {
    let fixture = fixture().await;
    alchemist_runtime::password::warm_up();
    let mut unknown = Vec::new();
    let mut wrong = Vec::new();

    for round in 0..5 {
        let started = Instant::now();
        let reply = fixture
            .login(&format!("nobody-{round}@example.com"), PASSWORD)
            .await;
        unknown.push(started.elapsed());
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);

        let started = Instant::now();
        let reply = fixture.login(EMAIL, "wrong").await;
        wrong.push(started.elapsed());
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
        // Keeps the account below the throttling threshold.
        fixture.limiter.record_success(EMAIL);
    }

    let (unknown, wrong) = (median(unknown), median(wrong));
    assert!(
        unknown * 3 >= wrong && wrong * 3 >= unknown,
        "median unknown email {unknown:?}, median wrong password {wrong:?}"
    );
}

#[tokio::test]
async fn validate_returns_claims() {
    let fixture = fixture().await;
    let login = fixture.login(EMAIL, PASSWORD).await;
    let token = login.body["access_token"].as_str().unwrap();

    let reply = fixture.validate(Some(&format!("Bearer {token}"))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let expected = serde_json::to_value(fixture.keys.verify(token).unwrap()).unwrap();
    assert_eq!(reply.body, expected);
    assert_eq!(reply.body["sub"], fixture.user.id);
    assert_eq!(reply.body["email"], EMAIL);
}

#[tokio::test]
async fn validate_accepts_hand_signed_token() {
    // The control for the rejection table: the unmodified hand-built token is valid.
    let fixture = fixture().await;
    let token = hand_token("HS256", TEST_SECRET, &fixture.valid_claims());

    let reply = fixture.validate(Some(&format!("Bearer {token}"))).await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.body["sub"], fixture.user.id);
}

#[tokio::test]
async fn validate_allows_clock_skew_within_leeway() {
    let fixture = fixture().await;
    let now = unix_now();
    let skew = LEEWAY_SECONDS / 2;
    let expired_just_now = with(fixture.valid_claims(), "exp", json!(now - skew));
    let valid_shortly = with(fixture.valid_claims(), "nbf", json!(now + skew));

    for (case, claims) in [("exp", expired_just_now), ("nbf", valid_shortly)] {
        let token = hand_token("HS256", TEST_SECRET, &claims);

        let reply = fixture.validate(Some(&format!("Bearer {token}"))).await;

        assert_eq!(
            reply.status,
            StatusCode::OK,
            "{case} {skew} s off: {}",
            reply.body
        );
    }
}

#[tokio::test]
async fn validate_rejects_invalid_tokens() {
    let fixture = fixture().await;
    let now = unix_now();
    let beyond_leeway = LEEWAY_SECONDS * 4;
    let valid = fixture.valid_claims();
    let genuine = hand_token("HS256", TEST_SECRET, &valid);
    let segments: Vec<&str> = genuine.split('.').collect();
    let admin_payload =
        URL_SAFE_NO_PAD.encode(with(valid.clone(), "role", json!("admin")).to_string());
    let expired = with(
        with(valid.clone(), "exp", json!(now - beyond_leeway)),
        "iat",
        json!(now - 3600),
    );

    let cases = [
        ("alg none", hand_token("none", TEST_SECRET, &valid)),
        (
            "HS384 with the right secret",
            hand_token("HS384", TEST_SECRET, &valid),
        ),
        (
            "wrong secret",
            hand_token(
                "HS256",
                b"another-secret-that-is-long-enough-for-hs256",
                &valid,
            ),
        ),
        (
            "tampered payload",
            format!("{}.{admin_payload}.{}", segments[0], segments[2]),
        ),
        (
            "signature removed",
            format!("{}.{}.", segments[0], segments[1]),
        ),
        ("expired", hand_token("HS256", TEST_SECRET, &expired)),
        (
            "not yet valid",
            hand_token(
                "HS256",
                TEST_SECRET,
                &with(valid.clone(), "nbf", json!(now + beyond_leeway)),
            ),
        ),
        (
            "wrong issuer",
            hand_token(
                "HS256",
                TEST_SECRET,
                &with(valid.clone(), "iss", json!("someone-else")),
            ),
        ),
        (
            "wrong audience",
            hand_token(
                "HS256",
                TEST_SECRET,
                &with(valid.clone(), "aud", json!("someone-else")),
            ),
        ),
        (
            "foreign keys",
            testing::foreign_keys()
                .issue(&fixture.user.id, EMAIL, Role::User)
                .0,
        ),
        (
            "missing exp",
            hand_token("HS256", TEST_SECRET, &without(valid.clone(), "exp")),
        ),
        (
            "missing iat",
            hand_token("HS256", TEST_SECRET, &without(valid.clone(), "iat")),
        ),
        (
            "missing iss",
            hand_token("HS256", TEST_SECRET, &without(valid.clone(), "iss")),
        ),
        (
            "missing aud",
            hand_token("HS256", TEST_SECRET, &without(valid.clone(), "aud")),
        ),
        (
            "missing sub",
            hand_token("HS256", TEST_SECRET, &without(valid.clone(), "sub")),
        ),
        ("malformed", "abc".to_owned()),
        ("empty", String::new()),
    ];

    for (case, token) in cases {
        let reply = fixture.validate(Some(&format!("Bearer {token}"))).await;

        assert_eq!(
            reply.status,
            StatusCode::UNAUTHORIZED,
            "{case}: {}",
            reply.body
        );
        assert!(
            reply
                .header(header::WWW_AUTHENTICATE)
                .contains(r#"error="invalid_token""#),
            "{case}: {:?}",
            reply.headers
        );
    }
}

#[tokio::test]
async fn validate_without_token_gets_challenge() {
    let fixture = fixture().await;

    for (case, authorization) in [("no header", None), ("Basic scheme", Some("Basic YTpi"))] {
        let reply = fixture.validate(authorization).await;

        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
        let challenge = reply.header(header::WWW_AUTHENTICATE);
        assert!(challenge.starts_with("Bearer "), "{case}: {challenge}");
        assert!(!challenge.contains("error="), "{case}: {challenge}");
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route() {
    let fixture = fixture().await;
    let before = testing::scrape_metrics(&fixture.router).await;

    let reply = fixture.login(EMAIL, PASSWORD).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    // No other test sends GET /login, so its count moves by exactly one.
    let reply = fixture
        .send(Request::get("/login").body(Body::empty()).unwrap())
        .await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    let after = testing::scrape_metrics(&fixture.router).await;

    let wrong_method = r#"alchemist_http_requests_total{method="GET",route="/login",status="405"}"#;
    assert_eq!(
        testing::sample(&after, wrong_method) - testing::sample(&before, wrong_method),
        1.0
    );
    let issued = r#"alchemist_http_requests_total{method="POST",route="/login",status="200"}"#;
    assert!(testing::sample(&after, issued) > testing::sample(&before, issued));
    let timed = r#"alchemist_http_request_duration_seconds_count{method="POST",route="/login",status="200"}"#;
    assert!(testing::sample(&after, timed) > testing::sample(&before, timed));
}
