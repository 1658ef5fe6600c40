//! Configuration from environment variables.
//!
//! Each function reads its variables once at start-up through an [`Env`], so
//! that tests can pass a map instead of changing the process environment. A
//! [`Reader`] collects every problem, and [`Reader::finish`] reports them all
//! at once, so an operator fixes a deployment in one round.

use std::{collections::HashMap, fmt::Display, str::FromStr};

use crate::Error;

/// A source of environment variables.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|value| !value.is_empty())
    }
}

impl Env for HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|value| !value.is_empty())
    }
}

impl Env for HashMap<&str, &str> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(|value| (*value).to_owned())
            .filter(|value| !value.is_empty())
    }
}

/// Reads variables and collects every problem.
pub struct Reader<'a> {
    env: &'a dyn Env,
    problems: Vec<String>,
}

impl<'a> Reader<'a> {
    pub fn new(env: &'a dyn Env) -> Reader<'a> {
        Reader {
            env,
            problems: Vec::new(),
        }
    }

    /// The raw value of `name`, if set and not empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.env.var(name)
    }

    /// The value of `name`; records a problem when it is unset.
    pub fn required(&mut self, name: &str, meaning: &str) -> Option<String> {
        let value = self.env.var(name);
        if value.is_none() {
            self.problems.push(format!("{name} is not set: {meaning}"));
        }
        value
    }

    /// The parsed value of `name`, or `default` when unset; records a problem
    /// when the value does not parse.
    pub fn parse_or<T>(&mut self, name: &str, default: T) -> T
    where
        T: FromStr,
        T::Err: Display,
    {
        match self.env.var(name) {
            None => default,
            Some(text) => match text.parse() {
                Ok(value) => value,
                Err(err) => {
                    self.problems
                        .push(format!("{name}={text} is not valid: {err}"));
                    default
                }
            },
        }
    }

    /// A boolean flag: `1`, `true`, `yes` or `on`, and their opposites.
    pub fn flag(&mut self, name: &str) -> bool {
        match self.env.var(name).map(|text| text.to_ascii_lowercase()) {
            None => false,
            Some(text) => match text.as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                _ => {
                    self.problems.push(format!(
                        "{name}={text} is not valid: expected true or false"
                    ));
                    false
                }
            },
        }
    }

    /// Records a problem found while checking values together.
    pub fn problem(&mut self, text: impl Into<String>) {
        self.problems.push(text.into());
    }

    /// Succeeds when no problem was recorded.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] listing every problem, one per line.
    pub fn finish(self) -> Result<(), Error> {
        if self.problems.is_empty() {
            return Ok(());
        }
        Err(Error::Config(
            self.problems
                .iter()
                .map(|problem| format!("  - {problem}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ))
    }
}

/// How long a converting job may go without a heartbeat before its worker
/// counts as dead, read from `JOB_LEASE_SECONDS` (default 60). convert sends
/// heartbeats at a quarter of it; upload's relay requeues jobs past it. Both
/// must read the same value.
pub fn job_lease(reader: &mut Reader<'_>) -> std::time::Duration {
    let seconds: u64 = reader.parse_or("JOB_LEASE_SECONDS", 60);
    if seconds < 4 {
        reader.problem(format!(
            "JOB_LEASE_SECONDS={seconds} is not valid: use at least 4"
        ));
    }
    std::time::Duration::from_secs(seconds.max(4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_reports_every_problem() {
        let env = HashMap::from([("PORT", "eighty"), ("FLAG", "maybe")]);
        let mut reader = Reader::new(&env);
        let port: u16 = reader.parse_or("PORT", 8080);
        let _ = reader.required("JWT_SECRET", "the token signing secret");
        let _ = reader.flag("FLAG");
        let err = reader.finish().unwrap_err().to_string();
        assert_eq!(port, 8080);
        assert!(err.contains("PORT=eighty is not valid"), "{err}");
        assert!(err.contains("JWT_SECRET is not set"), "{err}");
        assert!(err.contains("FLAG=maybe is not valid"), "{err}");
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = HashMap::from([("PORT", "")]);
        let mut reader = Reader::new(&env);
        assert_eq!(reader.parse_or("PORT", 8080u16), 8080);
        assert!(reader.finish().is_ok());
    }
}
