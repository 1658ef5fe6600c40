//! The dispatcher program: delivers events from RabbitMQ to the functions
//! over HTTP, one dispatcher per Trigger in `knative/base/triggers.yaml`.
//!
//! On a cluster, the Knative RabbitMQ Broker runs these dispatchers. Outside
//! one, this program does the same job for functions that run as processes:
//! upload publishes to RabbitMQ (`AMQP_URL`), and this program POSTs each
//! event to convert or notify and publishes their reply events. The routing,
//! retries and dead-letter handling are those of
//! [`alchemist_events::rabbitmq::dispatcher`].
//!
//! # Configuration
//!
//! | variable | meaning |
//! | --- | --- |
//! | `AMQP_URL` | required: the RabbitMQ server, e.g. `amqp://user:password@127.0.0.1:5672/%2f` |
//! | `SERVICE_URL_<SERVICE>` | required for every Service a Trigger names as subscriber or dead-letter sink: its base URL, e.g. `SERVICE_URL_CONVERT=http://127.0.0.1:8082` |
//! | `DISPATCHER_PREFETCH` | messages RabbitMQ sends to each dispatcher ahead of its acks; default: the Trigger's parallelism |
//! | `DISPATCHER_PARALLELISM_<TRIGGER>` | events delivered at once for that Trigger; default: its `rabbitmq.eventing.knative.dev/parallelism` annotation, else 1 |
//! | `DISPATCHER_REQUEST_TIMEOUT_SECONDS` | timeout of one HTTP request to a subscriber; default 900 |
//!
//! `<SERVICE>` and `<TRIGGER>` are the names in upper case with every
//! character other than a letter or digit replaced by `_`: the Trigger
//! `convert-on-video-uploaded` reads `DISPATCHER_PARALLELISM_CONVERT_ON_VIDEO_UPLOADED`.
//!
//! The program has no HTTP port: it only consumes and sends.

use std::{collections::HashMap, future::Future, time::Duration};

use alchemist_events::{
    rabbitmq::{
        DispatcherOptions, check_url, dispatcher::DEFAULT_REQUEST_TIMEOUT, run_dispatchers,
    },
    triggers::Routes,
};
use alchemist_runtime::{
    config::{Env, Reader},
    serve::SHUTDOWN_GRACE,
};
use anyhow::Context;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use url::Url;

/// The RabbitMQ server to consume from.
pub const ENV_AMQP_URL: &str = "AMQP_URL";
/// Prefix of the base URL of each Service, followed by its name.
pub const ENV_SERVICE_URL_PREFIX: &str = "SERVICE_URL_";
/// Prefetch count of every dispatcher.
pub const ENV_PREFETCH: &str = "DISPATCHER_PREFETCH";
/// Prefix of the parallelism of each Trigger, followed by its name.
pub const ENV_PARALLELISM_PREFIX: &str = "DISPATCHER_PARALLELISM_";
/// Timeout of one HTTP request to a subscriber, in seconds.
pub const ENV_REQUEST_TIMEOUT: &str = "DISPATCHER_REQUEST_TIMEOUT_SECONDS";

/// The configuration of the dispatchers. It has no `Debug`, because the AMQP
/// URL may contain a password.
pub struct Config {
    pub amqp_url: String,
    /// Base URL by Knative Service name.
    pub service_urls: HashMap<String, Url>,
    pub options: DispatcherOptions,
}

impl Config {
    /// Reads the variables for the Triggers of `routes` and records every
    /// problem in `reader`. Returns `None` when a required value is missing
    /// or invalid.
    pub fn read(reader: &mut Reader<'_>, routes: &Routes) -> Option<Config> {
        let amqp_url = reader.required(
            ENV_AMQP_URL,
            "the RabbitMQ server, for example amqp://user:password@127.0.0.1:5672/%2f",
        );
        if let Some(url) = &amqp_url
            && let Err(err) = check_url(url)
        {
            reader.problem(format!("{ENV_AMQP_URL} is not valid: {err}"));
        }

        let mut service_urls = HashMap::new();
        let mut services_complete = true;
        for service in service_names(routes) {
            match read_service_url(reader, &service) {
                Some(url) => {
                    service_urls.insert(service, url);
                }
                None => services_complete = false,
            }
        }

        let prefetch = read_positive(reader, ENV_PREFETCH).and_then(|count| {
            u16::try_from(count)
                .inspect_err(|_| {
                    reader.problem(format!(
                        "{ENV_PREFETCH}={count} is not valid: the maximum is {}",
                        u16::MAX
                    ));
                })
                .ok()
        });
        let mut parallelism = HashMap::new();
        for trigger in &routes.triggers {
            let name = env_name(ENV_PARALLELISM_PREFIX, &trigger.name);
            if let Some(count) = read_positive(reader, &name) {
                parallelism.insert(trigger.name.clone(), count);
            }
        }
        let request_timeout = read_positive(reader, ENV_REQUEST_TIMEOUT)
            .map_or(DEFAULT_REQUEST_TIMEOUT, |seconds| {
                Duration::from_secs(seconds as u64)
            });

        let amqp_url = amqp_url?;
        if !services_complete {
            return None;
        }
        Some(Config {
            amqp_url,
            service_urls,
            options: DispatcherOptions {
                prefetch,
                parallelism,
                request_timeout,
                ..DispatcherOptions::default()
            },
        })
    }
}

/// Builds the environment variable name for `name` after `prefix`: upper
/// case, and `_` for every character other than an ASCII letter or digit.
pub fn env_name(prefix: &str, name: &str) -> String {
    let suffix: String = name
        .chars()
        .map(|character| {
            if character.is_ascii_alphanumeric() {
                character.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("{prefix}{suffix}")
}

/// Lists every Service that a Trigger names as subscriber or dead-letter sink, sorted.
fn service_names(routes: &Routes) -> Vec<String> {
    let mut names: Vec<String> = routes
        .triggers
        .iter()
        .flat_map(|trigger| {
            std::iter::once(&trigger.subscriber).chain(&trigger.delivery.dead_letter_sink)
        })
        .map(|destination| destination.service.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

fn read_service_url(reader: &mut Reader<'_>, service: &str) -> Option<Url> {
    let name = env_name(ENV_SERVICE_URL_PREFIX, service);
    let text = reader.required(
        &name,
        &format!("the base URL of the Service {service}, which a Trigger sends events to"),
    )?;
    match Url::parse(&text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
        Ok(_) => {
            reader.problem(format!(
                "{name}={text} is not valid: expected an http or https URL"
            ));
            None
        }
        Err(err) => {
            reader.problem(format!("{name}={text} is not valid: {err}"));
            None
        }
    }
}

/// Reads an optional whole number of at least 1.
fn read_positive(reader: &mut Reader<'_>, name: &str) -> Option<usize> {
    let text = reader.optional(name)?;
    match text.parse::<usize>() {
        Ok(count) if count >= 1 => Some(count),
        _ => {
            reader.problem(format!(
                "{name}={text} is not valid: expected a whole number of at least 1"
            ));
            None
        }
    }
}

/// Reads the configuration from `env` and runs the dispatchers of the
/// compiled-in Triggers until `shutdown` completes. After that, deliveries in
/// flight get [`SHUTDOWN_GRACE`] to finish; RabbitMQ redelivers the rest.
///
/// # Errors
///
/// Every invalid or missing variable, reported together before anything connects.
pub async fn run(
    env: &dyn Env,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let routes = Routes::embedded();
    let mut reader = Reader::new(env);
    let config = Config::read(&mut reader, &routes);
    reader.finish()?;
    let config = config.context("the configuration is incomplete")?;

    let token = CancellationToken::new();
    let signal = token.clone();
    tokio::spawn(async move {
        shutdown.await;
        signal.cancel();
    });
    let grace = async {
        token.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };

    info!(triggers = routes.triggers.len(), "starting the dispatchers");
    let dispatching = run_dispatchers(
        &config.amqp_url,
        &routes,
        &config.service_urls,
        config.options,
        token.clone().cancelled_owned(),
    );
    tokio::select! {
        result = dispatching => result.context("the dispatchers failed to start")?,
        () = grace => warn!(
            grace_seconds = SHUTDOWN_GRACE.as_secs(),
            "deliveries were still running when the shutdown grace period ended; RabbitMQ redelivers their events"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete_env() -> HashMap<&'static str, &'static str> {
        HashMap::from([
            ("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            ("SERVICE_URL_CONVERT", "http://127.0.0.1:8082"),
            ("SERVICE_URL_NOTIFY", "http://127.0.0.1:8083"),
        ])
    }

    #[test]
    fn env_name_is_upper_snake() {
        assert_eq!(
            env_name(ENV_PARALLELISM_PREFIX, "convert-on-video-uploaded"),
            "DISPATCHER_PARALLELISM_CONVERT_ON_VIDEO_UPLOADED"
        );
        assert_eq!(
            env_name(ENV_SERVICE_URL_PREFIX, "notify"),
            "SERVICE_URL_NOTIFY"
        );
    }

    #[test]
    fn config_reads_defaults() {
        let env = complete_env();
        let mut reader = Reader::new(&env);
        let config = Config::read(&mut reader, &Routes::embedded()).unwrap();
        reader.finish().unwrap();
        assert_eq!(config.amqp_url, "amqp://guest:guest@127.0.0.1:5672/%2f");
        assert_eq!(
            config.service_urls["convert"].as_str(),
            "http://127.0.0.1:8082/"
        );
        assert_eq!(config.service_urls.len(), 2);
        assert_eq!(config.options.prefetch, None);
        assert!(config.options.parallelism.is_empty());
        assert_eq!(config.options.request_timeout, DEFAULT_REQUEST_TIMEOUT);
    }

    #[test]
    fn config_reads_overrides() {
        let mut env = complete_env();
        env.insert("DISPATCHER_PREFETCH", "8");
        env.insert("DISPATCHER_PARALLELISM_NOTIFY_ON_AUDIO_CONVERTED", "2");
        env.insert("DISPATCHER_REQUEST_TIMEOUT_SECONDS", "30");
        let mut reader = Reader::new(&env);
        let config = Config::read(&mut reader, &Routes::embedded()).unwrap();
        reader.finish().unwrap();
        assert_eq!(config.options.prefetch, Some(8));
        assert_eq!(
            config.options.parallelism,
            HashMap::from([("notify-on-audio-converted".to_owned(), 2)])
        );
        assert_eq!(config.options.request_timeout, Duration::from_secs(30));
    }

    #[test]
    fn config_reports_every_problem() {
        let env = HashMap::from([
            ("SERVICE_URL_CONVERT", "ftp://127.0.0.1"),
            ("DISPATCHER_PREFETCH", "0"),
            ("DISPATCHER_PARALLELISM_CONVERT_ON_VIDEO_UPLOADED", "many"),
        ]);
        let mut reader = Reader::new(&env);
        assert!(Config::read(&mut reader, &Routes::embedded()).is_none());
        let err = reader.finish().unwrap_err().to_string();
        for expected in [
            "AMQP_URL is not set",
            "SERVICE_URL_CONVERT=ftp://127.0.0.1 is not valid",
            "SERVICE_URL_NOTIFY is not set",
            "DISPATCHER_PREFETCH=0 is not valid",
            "DISPATCHER_PARALLELISM_CONVERT_ON_VIDEO_UPLOADED=many is not valid",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn config_rejects_invalid_amqp_url() {
        let mut env = complete_env();
        env.insert("AMQP_URL", "http://127.0.0.1:5672");
        let mut reader = Reader::new(&env);
        let _ = Config::read(&mut reader, &Routes::embedded());
        let err = reader.finish().unwrap_err().to_string();
        assert!(err.contains("AMQP_URL is not valid"), "{err}");
    }

    #[tokio::test]
    async fn run_reports_missing_variables_before_connecting() {
        let env: HashMap<&str, &str> = HashMap::new();
        let err = run(&env, std::future::pending()).await.unwrap_err();
        let text = format!("{err:#}");
        assert!(text.contains("AMQP_URL is not set"), "{text}");
        assert!(text.contains("SERVICE_URL_CONVERT is not set"), "{text}");
        assert!(text.contains("SERVICE_URL_NOTIFY is not set"), "{text}");
    }
}
