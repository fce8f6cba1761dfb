//! [`ShareConsumerConfig`]: the share consumer's settings, with the Java client's property
//! names and defaults.

use std::time::Duration;

use crate::config::{self, Setting};
use crate::{Error, Result};

/// How records are acknowledged (`share.acknowledgement.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum AcknowledgementMode {
    /// `implicit` (the default): every record a poll returned is accepted by the next
    /// [`poll`](super::ShareConsumer::poll), [`commit_sync`](super::ShareConsumer::commit_sync)
    /// or [`commit_async`](super::ShareConsumer::commit_async); [`close`](super::ShareConsumer::close)
    /// releases them instead. [`acknowledge`](super::ShareConsumer::acknowledge) may still be
    /// called to release or reject a record before that.
    #[default]
    Implicit,
    /// `explicit`: the application acknowledges every record with
    /// [`acknowledge`](super::ShareConsumer::acknowledge) before the next poll, which fails with
    /// [`ErrorKind::InvalidState`](crate::ErrorKind::InvalidState) otherwise.
    Explicit,
}

impl AcknowledgementMode {
    /// The property value: `implicit` or `explicit`.
    pub fn as_str(self) -> &'static str {
        match self {
            AcknowledgementMode::Implicit => "implicit",
            AcknowledgementMode::Explicit => "explicit",
        }
    }
}

/// A share consumer's settings. Every field has the Java `KafkaShareConsumer`'s default and
/// property name; see [`apply_property`](Self::apply_property).
///
/// ```
/// use std::time::Duration;
/// use rekafka::share::{AcknowledgementMode, ShareConsumerConfig};
///
/// let config = ShareConsumerConfig::new("workers")
///     .with_acknowledgement_mode(AcknowledgementMode::Explicit)
///     .with_max_poll_records(100);
/// assert_eq!(config.fetch_max_wait, Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShareConsumerConfig {
    /// `group.id`: the share group. Required (no default).
    pub group_id: String,
    /// `share.acknowledgement.mode`: implicit (default) or explicit.
    pub acknowledgement_mode: AcknowledgementMode,
    /// `max.poll.records`: the most records one poll returns, and the `MaxRecords` of each
    /// ShareFetch (default 500).
    pub max_poll_records: usize,
    /// `fetch.min.bytes` (default 1).
    pub fetch_min_bytes: i32,
    /// `fetch.max.bytes` (default 52428800).
    pub fetch_max_bytes: i32,
    /// `fetch.max.wait.ms`: how long a broker may hold a ShareFetch without records (default
    /// 500 ms).
    pub fetch_max_wait: Duration,
    /// `max.partition.fetch.bytes` (default 1048576).
    pub max_partition_fetch_bytes: i32,
    /// `client.rack`: sent in the heartbeat (default none).
    pub client_rack: Option<String>,
    /// `default.api.timeout.ms`: the bound of [`commit_sync`](super::ShareConsumer::commit_sync)
    /// and [`close`](super::ShareConsumer::close) (default 60 s).
    pub default_api_timeout: Duration,
    /// `max.poll.interval.ms`: a member that does not poll within it leaves the group (its
    /// partitions' records go to the members that poll); the next poll rejoins (default
    /// 300 s).
    pub max_poll_interval: Duration,
    /// `retry.backoff.ms`: the wait after a failed heartbeat or fetch (default 100 ms).
    pub retry_backoff: Duration,
    /// `retry.backoff.max.ms`: the longest wait between retries (default 1 s).
    pub retry_backoff_max: Duration,
}

impl Default for ShareConsumerConfig {
    fn default() -> Self {
        ShareConsumerConfig {
            group_id: String::new(),
            acknowledgement_mode: AcknowledgementMode::Implicit,
            max_poll_records: 500,
            fetch_min_bytes: 1,
            fetch_max_bytes: 52_428_800,
            fetch_max_wait: Duration::from_millis(500),
            max_partition_fetch_bytes: 1_048_576,
            client_rack: None,
            default_api_timeout: Duration::from_secs(60),
            max_poll_interval: Duration::from_secs(300),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
        }
    }
}

impl ShareConsumerConfig {
    /// The settings [`apply_property`](Self::apply_property) knows (see
    /// [`config`] and `docs/configuration.md`).
    pub const SETTINGS: &'static [Setting] = config::SHARE;

    /// Every key [`apply_property`](Self::apply_property) knows.
    pub fn property_names() -> impl Iterator<Item = &'static str> + Clone {
        config::names(Self::SETTINGS)
    }

    /// The defaults with `group.id` set.
    pub fn new(group_id: impl Into<String>) -> ShareConsumerConfig {
        ShareConsumerConfig {
            group_id: group_id.into(),
            ..ShareConsumerConfig::default()
        }
    }

    /// Sets `share.acknowledgement.mode`.
    pub fn with_acknowledgement_mode(mut self, mode: AcknowledgementMode) -> Self {
        self.acknowledgement_mode = mode;
        self
    }

    /// Sets `max.poll.records`.
    pub fn with_max_poll_records(mut self, max: usize) -> Self {
        self.max_poll_records = max;
        self
    }

    /// Sets `max.poll.interval.ms`.
    pub fn with_max_poll_interval(mut self, interval: Duration) -> Self {
        self.max_poll_interval = interval;
        self
    }

    /// Sets `fetch.max.wait.ms`.
    pub fn with_fetch_max_wait(mut self, wait: Duration) -> Self {
        self.fetch_max_wait = wait;
        self
    }

    /// Sets one Java-style property: `Ok(false)` if `key` is not a share consumer key, an
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the key for a bad value.
    pub fn apply_property(&mut self, key: &str, value: &str) -> Result<bool> {
        let Some(s) = config::find(Self::SETTINGS, key) else {
            return Ok(false);
        };
        match s.key {
            "group.id" => self.group_id = s.text(value)?.unwrap_or_default(),
            "share.acknowledgement.mode" => {
                self.acknowledgement_mode = match s.choice(value)? {
                    "explicit" => AcknowledgementMode::Explicit,
                    _ => AcknowledgementMode::Implicit,
                }
            }
            "max.poll.records" => self.max_poll_records = s.number(value)?,
            "fetch.min.bytes" => self.fetch_min_bytes = s.number(value)?,
            "fetch.max.bytes" => self.fetch_max_bytes = s.number(value)?,
            "fetch.max.wait.ms" => self.fetch_max_wait = s.millis(value)?,
            "max.partition.fetch.bytes" => self.max_partition_fetch_bytes = s.number(value)?,
            "client.rack" => self.client_rack = s.text(value)?,
            "default.api.timeout.ms" => self.default_api_timeout = s.millis(value)?,
            "max.poll.interval.ms" => self.max_poll_interval = s.millis(value)?,
            "retry.backoff.ms" => self.retry_backoff = s.millis(value)?,
            "retry.backoff.max.ms" => self.retry_backoff_max = s.millis(value)?,
            other => return Err(config::unhandled(other)),
        }
        Ok(true)
    }

    /// Checks the settings: an [`ErrorKind::Config`](crate::ErrorKind::Config) error naming
    /// the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.group_id.is_empty() {
            return Err(Error::config("group.id is required for a share consumer"));
        }
        if self.max_poll_records == 0 || self.max_poll_records > i32::MAX as usize {
            return Err(Error::config("max.poll.records must be at least 1"));
        }
        if self.fetch_min_bytes < 0
            || self.fetch_max_bytes <= 0
            || self.max_partition_fetch_bytes <= 0
        {
            return Err(Error::config(
                "fetch.min.bytes must be 0 or more, fetch.max.bytes and max.partition.fetch.bytes more than 0",
            ));
        }
        if self.max_poll_interval.is_zero() {
            return Err(Error::config("max.poll.interval.ms must be more than 0"));
        }
        if self.fetch_max_wait.as_millis() > i32::MAX as u128 {
            return Err(Error::config("fetch.max.wait.ms is too large"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_set_fields_and_reject_bad_values() {
        let mut c = ShareConsumerConfig::default();
        assert!(c.apply_property("group.id", "g").unwrap());
        assert!(
            c.apply_property("share.acknowledgement.mode", "EXPLICIT")
                .unwrap()
        );
        assert!(c.apply_property("max.poll.records", "7").unwrap());
        assert!(!c.apply_property("auto.offset.reset", "earliest").unwrap());
        assert_eq!(c.acknowledgement_mode, AcknowledgementMode::Explicit);
        assert_eq!(c.max_poll_records, 7);
        let e = c
            .apply_property("share.acknowledgement.mode", "sometimes")
            .unwrap_err();
        assert!(e.to_string().contains("share.acknowledgement.mode"));
        c.validate().unwrap();
        assert!(ShareConsumerConfig::default().validate().is_err());
    }

    #[test]
    fn the_table_defaults_are_the_defaults() {
        let default = format!("{:?}", ShareConsumerConfig::default());
        for s in ShareConsumerConfig::SETTINGS
            .iter()
            .filter(|s| !s.default.is_empty())
        {
            let mut c = ShareConsumerConfig::default();
            c.apply_property(s.key, s.default)
                .unwrap_or_else(|e| panic!("{}: {e}", s.key));
            assert_eq!(format!("{c:?}"), default, "{}", s.key);
        }
    }
}
