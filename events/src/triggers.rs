//! Routes read from Knative `Trigger` manifests.
//!
//! The manifests in `knative/base/triggers.yaml` are the single source of
//! routing: a cluster applies them, and the local brokers compile them in
//! through [`Routes::embedded`], so local and cluster routing cannot drift.
//! Only the fields the local brokers act on are read: the exact-match
//! attribute filter, the subscriber, the delivery spec and the parallelism
//! annotation of the Knative RabbitMQ Broker.

use std::{collections::BTreeMap, time::Duration};

use serde::Deserialize;

use crate::Error;

/// The Trigger manifests of the base deployment, compiled in.
pub const EMBEDDED_TRIGGERS: &str = include_str!("../../knative/base/triggers.yaml");

/// Annotation of the Knative RabbitMQ Broker that sets a Trigger's dispatcher concurrency.
pub const PARALLELISM_ANNOTATION: &str = "rabbitmq.eventing.knative.dev/parallelism";

/// Every route of one deployment.
#[derive(Debug, Clone)]
pub struct Routes {
    pub triggers: Vec<Trigger>,
}

/// One Trigger: which events go to which subscriber, and how delivery is retried.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub name: String,
    pub broker: String,
    /// Exact-match filters on CloudEvent attributes; all must match.
    pub filter: BTreeMap<String, String>,
    pub subscriber: Destination,
    pub delivery: Delivery,
    /// How many events the dispatcher hands to the subscriber at once.
    pub parallelism: Option<usize>,
}

/// A Knative destination: a Service by name, with an optional path on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub service: String,
    /// Path relative to the service root, `/` when the manifest gives none.
    pub path: String,
}

/// The delivery spec of a Trigger.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Retries after the first attempt.
    pub retry: u32,
    pub backoff_policy: BackoffPolicy,
    pub backoff_delay: Duration,
    pub dead_letter_sink: Option<Destination>,
}

impl Default for Delivery {
    fn default() -> Self {
        Delivery {
            retry: 0,
            backoff_policy: BackoffPolicy::Exponential,
            backoff_delay: Duration::from_millis(200),
            dead_letter_sink: None,
        }
    }
}

/// Growth of the wait between attempts, as Knative defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackoffPolicy {
    /// `delay * 2^retry`.
    Exponential,
    /// `delay * retry`.
    Linear,
}

impl Delivery {
    /// Computes the wait before retry number `retry` (1 for the first retry).
    pub fn backoff(&self, retry: u32) -> Duration {
        match self.backoff_policy {
            BackoffPolicy::Exponential => self.backoff_delay * 2u32.saturating_pow(retry.min(16)),
            BackoffPolicy::Linear => self.backoff_delay * retry,
        }
    }
}

impl Trigger {
    /// Checks whether `attributes` satisfy every filter of this Trigger.
    pub fn matches<'a>(&self, mut attribute: impl FnMut(&str) -> Option<&'a str>) -> bool {
        self.filter
            .iter()
            .all(|(name, expected)| attribute(name) == Some(expected.as_str()))
    }
}

impl Routes {
    /// Parses the Trigger manifests compiled into this program.
    pub fn embedded() -> Routes {
        Routes::parse(EMBEDDED_TRIGGERS).expect("the compiled-in Trigger manifests are valid")
    }

    /// Parses every `Trigger` in a multi-document YAML text; other kinds are skipped.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidTrigger`] when a Trigger lacks a field the brokers need
    /// or has a value they cannot follow.
    pub fn parse(yaml: &str) -> Result<Routes, Error> {
        let mut triggers = Vec::new();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|err| Error::InvalidTrigger(err.to_string()))?;
            if value.get("kind").and_then(|kind| kind.as_str()) != Some("Trigger") {
                continue;
            }
            let manifest: TriggerManifest = serde_yaml::from_value(value)
                .map_err(|err| Error::InvalidTrigger(err.to_string()))?;
            triggers.push(manifest.into_trigger()?);
        }
        Ok(Routes { triggers })
    }

    /// Lists the Triggers whose filter matches an event with this `type`.
    pub fn for_type<'a>(&'a self, event_type: &'a str) -> impl Iterator<Item = &'a Trigger> + 'a {
        self.triggers
            .iter()
            .filter(move |trigger| trigger.matches(|name| (name == "type").then_some(event_type)))
    }
}

#[derive(Deserialize)]
struct TriggerManifest {
    metadata: Metadata,
    spec: TriggerSpec,
}

#[derive(Deserialize)]
struct Metadata {
    name: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TriggerSpec {
    broker: String,
    #[serde(default)]
    filter: Option<Filter>,
    subscriber: DestinationManifest,
    #[serde(default)]
    delivery: Option<DeliveryManifest>,
}

#[derive(Deserialize)]
struct Filter {
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct DestinationManifest {
    #[serde(rename = "ref")]
    reference: Option<Reference>,
    uri: Option<String>,
}

#[derive(Deserialize)]
struct Reference {
    kind: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryManifest {
    retry: Option<u32>,
    backoff_policy: Option<String>,
    backoff_delay: Option<String>,
    dead_letter_sink: Option<DestinationManifest>,
}

impl TriggerManifest {
    fn into_trigger(self) -> Result<Trigger, Error> {
        let name = self.metadata.name;
        let invalid = |what: String| Error::InvalidTrigger(format!("Trigger {name}: {what}"));

        let subscriber = self.spec.subscriber.into_destination().map_err(&invalid)?;
        let mut delivery = Delivery::default();
        if let Some(manifest) = self.spec.delivery {
            delivery.retry = manifest.retry.unwrap_or(0);
            delivery.backoff_policy = match manifest.backoff_policy.as_deref() {
                None | Some("exponential") => BackoffPolicy::Exponential,
                Some("linear") => BackoffPolicy::Linear,
                Some(other) => return Err(invalid(format!("unknown backoffPolicy {other}"))),
            };
            if let Some(text) = manifest.backoff_delay {
                delivery.backoff_delay = parse_iso8601_duration(&text).ok_or_else(|| {
                    invalid(format!("backoffDelay {text} is not an ISO 8601 duration"))
                })?;
            }
            delivery.dead_letter_sink = manifest
                .dead_letter_sink
                .map(DestinationManifest::into_destination)
                .transpose()
                .map_err(&invalid)?;
        }
        let parallelism = match self.metadata.annotations.get(PARALLELISM_ANNOTATION) {
            None => None,
            Some(text) => match text.parse::<usize>() {
                Ok(count) if count > 0 => Some(count),
                _ => {
                    return Err(invalid(format!(
                        "{PARALLELISM_ANNOTATION} {text} is not a positive integer"
                    )));
                }
            },
        };

        Ok(Trigger {
            filter: self
                .spec
                .filter
                .map(|filter| filter.attributes)
                .unwrap_or_default(),
            broker: self.spec.broker,
            subscriber,
            delivery,
            parallelism,
            name,
        })
    }
}

impl DestinationManifest {
    fn into_destination(self) -> Result<Destination, String> {
        let reference = self
            .reference
            .ok_or("the destination has no ref to a Service")?;
        if reference.kind != "Service" {
            return Err(format!(
                "destination kind {} is not a Service",
                reference.kind
            ));
        }
        let path = match self.uri {
            None => "/".to_owned(),
            Some(uri) if uri.starts_with('/') => uri,
            Some(uri) => return Err(format!("destination uri {uri} is not a path")),
        };
        Ok(Destination {
            service: reference.name,
            path,
        })
    }
}

/// Parses the ISO 8601 durations Knative accepts in `backoffDelay`, such as
/// `PT0.5S`, `PT2M` or `P1DT1H`. Years, months and weeks are not accepted,
/// because their length varies.
pub fn parse_iso8601_duration(text: &str) -> Option<Duration> {
    let rest = text.strip_prefix('P')?;
    let (days, time) = match rest.split_once('T') {
        Some((days, time)) => (days, Some(time)),
        None => (rest, None),
    };
    let mut seconds = 0.0f64;
    let mut any = false;
    if !days.is_empty() {
        seconds += days.strip_suffix('D')?.parse::<f64>().ok()? * 86_400.0;
        any = true;
    }
    if let Some(mut time) = time {
        for (unit, factor) in [('H', 3600.0), ('M', 60.0), ('S', 1.0)] {
            if let Some((number, after)) = time.split_once(unit) {
                seconds += number.parse::<f64>().ok()? * factor;
                time = after;
                any = true;
            }
        }
        if !time.is_empty() {
            return None;
        }
    }
    if !any || !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso8601_durations_parse() {
        assert_eq!(parse_iso8601_duration("PT1S"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_iso8601_duration("PT0.5S"),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            parse_iso8601_duration("PT2M"),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_iso8601_duration("P1DT1H"),
            Some(Duration::from_secs(90_000))
        );
        assert_eq!(
            parse_iso8601_duration("PT1M30S"),
            Some(Duration::from_secs(90))
        );
    }

    #[test]
    fn iso8601_rejects_garbage() {
        for text in ["", "P", "PT", "1S", "PT1X", "P1M", "PT-1S", "PTS"] {
            assert_eq!(parse_iso8601_duration(text), None, "{text}");
        }
    }

    #[test]
    fn embedded_triggers_route_every_type() {
        let routes = Routes::embedded();
        let subscribers = |ty: &str| -> Vec<String> {
            routes
                .for_type(ty)
                .map(|t| t.subscriber.service.clone())
                .collect()
        };
        assert_eq!(
            subscribers("dev.audioalchemist.video.uploaded.v1"),
            ["convert"]
        );
        assert_eq!(
            subscribers("dev.audioalchemist.audio.converted.v1"),
            ["notify"]
        );
        assert_eq!(
            subscribers("dev.audioalchemist.conversion.failed.v1"),
            ["notify"]
        );
        assert!(subscribers("dev.audioalchemist.unknown.v1").is_empty());
    }

    #[test]
    fn delivery_spec_is_read() {
        let routes = Routes::parse(
            r#"
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: t
  annotations:
    rabbitmq.eventing.knative.dev/parallelism: "3"
spec:
  broker: b
  filter: { attributes: { type: a.b.v1 } }
  subscriber: { ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: s } }
  delivery:
    retry: 4
    backoffPolicy: linear
    backoffDelay: PT0.25S
    deadLetterSink: { ref: { apiVersion: serving.knative.dev/v1, kind: Service, name: d }, uri: /dead }
---
apiVersion: v1
kind: ConfigMap
metadata: { name: ignored }
"#,
        )
        .unwrap();
        let trigger = &routes.triggers[0];
        assert_eq!(routes.triggers.len(), 1);
        assert_eq!(trigger.parallelism, Some(3));
        assert_eq!(trigger.delivery.retry, 4);
        assert_eq!(trigger.delivery.backoff(2), Duration::from_millis(500));
        assert_eq!(
            trigger.delivery.dead_letter_sink,
            Some(Destination {
                service: "d".into(),
                path: "/dead".into()
            })
        );
    }

    #[test]
    fn exponential_backoff_doubles() {
        let delivery = Delivery {
            backoff_delay: Duration::from_secs(1),
            ..Delivery::default()
        };
        assert_eq!(delivery.backoff(1), Duration::from_secs(2));
        assert_eq!(delivery.backoff(3), Duration::from_secs(8));
    }

    #[test]
    fn bad_trigger_is_rejected() {
        let err = Routes::parse(
            "kind: Trigger\nmetadata: {name: t}\nspec:\n  broker: b\n  subscriber: {uri: http://x}\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("no ref"), "{err}");
    }
}
