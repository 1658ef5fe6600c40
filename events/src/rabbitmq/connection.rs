//! Opening AMQP connections, and the backoff between reconnection attempts.

use std::time::Duration;

use lapin::{Connection, ConnectionProperties, types::LongString, uri::AMQPUri};

use crate::Error;

/// Maximum wait for a TCP connection and the AMQP handshake. A node that is
/// still booting can accept TCP connections and then stall the handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// First wait before reconnecting.
pub(crate) const RECONNECT_DELAY_MIN: Duration = Duration::from_millis(100);

/// Maximum wait between reconnection attempts.
pub(crate) const RECONNECT_DELAY_MAX: Duration = Duration::from_secs(5);

/// Checks that `url` is an AMQP URL, without connecting.
///
/// # Errors
///
/// [`Error::Unavailable`] naming the URL without its password.
pub fn check_url(url: &str) -> Result<(), Error> {
    url.parse::<AMQPUri>().map(|_| ()).map_err(|err| {
        Error::Unavailable(format!("{} is not a valid AMQP URL: {err}", redact(url)))
    })
}

/// Returns the URL with its password masked, for logs and errors.
pub(crate) fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Err(_) => "the AMQP URL".to_owned(),
    }
}

/// Opens a connection that RabbitMQ lists under `name`.
///
/// # Errors
///
/// [`Error::Unavailable`] when the connection fails or times out.
pub(crate) async fn connect(url: &str, name: &str) -> Result<Connection, Error> {
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name));
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(err)) => Err(Error::Unavailable(format!(
            "connecting to {} failed: {err}",
            redact(url)
        ))),
        Err(_) => Err(Error::Unavailable(format!(
            "connecting to {} timed out after {}s",
            redact(url),
            CONNECT_TIMEOUT.as_secs()
        ))),
    }
}

/// Closes a connection, waiting at most a second, because a connection whose
/// socket is already gone may never confirm the close.
pub(crate) async fn close(connection: &Connection) {
    let closing = connection.close(200, "closing".into());
    let _ = tokio::time::timeout(Duration::from_secs(1), closing).await;
}

/// Exponential backoff between reconnection attempts.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Backoff {
        Backoff {
            next: RECONNECT_DELAY_MIN,
        }
    }

    /// Returns the wait before the next attempt. Each call doubles the next
    /// wait, up to [`RECONNECT_DELAY_MAX`].
    pub(crate) fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(RECONNECT_DELAY_MAX);
        delay
    }

    /// Starts again from [`RECONNECT_DELAY_MIN`], after a successful connection.
    pub(crate) fn reset(&mut self) {
        self.next = RECONNECT_DELAY_MIN;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password() {
        assert_eq!(
            redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
    }

    #[test]
    fn check_url_rejects_other_schemes() {
        assert!(check_url("amqp://guest:guest@127.0.0.1:5672/%2f").is_ok());
        let err = check_url("http://guest:secret@127.0.0.1/").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut backoff = Backoff::new();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
        assert_eq!(backoff.next_delay(), Duration::from_millis(200));
        for _ in 0..10 {
            backoff.next_delay();
        }
        assert_eq!(backoff.next_delay(), RECONNECT_DELAY_MAX);
        backoff.reset();
        assert_eq!(backoff.next_delay(), RECONNECT_DELAY_MIN);
    }
}
