//! argon2id password hashes, computed off the async workers.

use std::sync::LazyLock;

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};

use crate::Error;

/// A hash of a random password, verified against when the email is unknown so
/// that a wrong email takes as long as a wrong password.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    let password: [u8; 16] = rand::random();
    hash_blocking(&hex::encode(password)).expect("hashing a random password does not fail")
});

fn hash_blocking(password: &str) -> Result<String, Error> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|err| Error::Password(err.to_string()))
}

fn verify_blocking(password: &str, hash: &str) -> Result<bool, Error> {
    let parsed =
        PasswordHash::new(hash).map_err(|err| Error::Corrupt(format!("password hash: {err}")))?;
    Ok(Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok())
}

/// Hashes a password with argon2id (the `argon2` crate's default, with its
/// default cost parameters) and a random salt.
///
/// # Errors
///
/// [`Error::Password`] if hashing fails, [`Error::Task`] if the blocking task is lost.
pub async fn hash(password: String) -> Result<String, Error> {
    tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
}

/// Checks a password against a stored hash, or against a dummy hash when
/// `hash` is `None`, which then always fails in the same time.
///
/// # Errors
///
/// [`Error::Corrupt`] when the stored hash cannot be parsed.
pub async fn verify(password: String, hash: Option<String>) -> Result<bool, Error> {
    tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_blocking(&password, &hash),
        None => verify_blocking(&password, &DUMMY_HASH).map(|_| false),
    })
    .await?
}

/// Computes the dummy hash ahead of the first login, so that it does not slow that login.
pub fn warm_up() {
    LazyLock::force(&DUMMY_HASH);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verifies_only_its_password() {
        let hash = hash("correct horse".to_owned()).await.unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(
            verify("correct horse".to_owned(), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!verify("wrong".to_owned(), Some(hash)).await.unwrap());
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        assert!(!verify("anything".to_owned(), None).await.unwrap());
    }
}
