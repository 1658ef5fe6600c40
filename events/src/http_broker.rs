//! Publishing to an HTTP sink, as Knative functions do with `K_SINK`.

use std::time::Duration;

use async_trait::async_trait;
use cloudevents::Event;

use crate::{Error, broker::Broker, http::to_request};

/// Sends each event in binary mode to one URL, normally a Knative Broker's
/// ingress given by `K_SINK`; the Broker routes it on.
#[derive(Debug, Clone)]
pub struct HttpSinkBroker {
    sink: url::Url,
    client: reqwest::Client,
}

impl HttpSinkBroker {
    /// # Errors
    ///
    /// [`Error::Unavailable`] when `sink` is not an http or https URL.
    pub fn new(sink: &str) -> Result<HttpSinkBroker, Error> {
        let sink = url::Url::parse(sink)
            .map_err(|err| Error::Unavailable(format!("sink URL {sink}: {err}")))?;
        if !matches!(sink.scheme(), "http" | "https") {
            return Err(Error::Unavailable(format!(
                "sink URL {sink} is not http or https"
            )));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|err| Error::Unavailable(err.to_string()))?;
        Ok(HttpSinkBroker { sink, client })
    }
}

#[async_trait]
impl Broker for HttpSinkBroker {
    async fn publish(&self, event: Event) -> Result<(), Error> {
        let request = to_request(event, self.sink.as_str())?;
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, crate::http::MAX_EVENT_BYTES)
            .await
            .map_err(|err| Error::InvalidEvent(err.to_string()))?;
        let response = self
            .client
            .post(self.sink.clone())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(|err| Error::Unavailable(format!("sending to {}: {err}", self.sink)))?;
        if !response.status().is_success() {
            return Err(Error::Unavailable(format!(
                "{} answered {}",
                self.sink,
                response.status()
            )));
        }
        Ok(())
    }
}
