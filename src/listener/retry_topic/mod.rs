//! Non-blocking retries through retry topics and a dead-letter topic (Spring's
//! `@RetryableTopic`), with Spring's topic names, headers and encodings, so that a Spring
//! service and a rekafka service can share the same retry topics.
//!
//! A [`RetryTopicConfiguration`] turns one record handler into listener containers, all
//! started and stopped by one [`RetryTopicHandle`]:
//!
//! * the **main** container consumes the main topic (group `G`); a record that fails is
//!   forwarded to the first retry topic with `retry_topic-attempts = 2` and a due time
//!   (`retry_topic-backoff-timestamp`) one delay ahead;
//! * one **retry** container per retry topic (group `G<suffix>`, e.g. `G-retry-0`, as Spring
//!   names them): a record not due yet is not handled: its partition is sought back to it and
//!   paused until it is due ([`Acknowledgment::nack`]), while the container's other partitions
//!   and the other containers go on and the consumers keep heart-beating. A due record is
//!   handled; if it fails it goes on to the next retry topic (or stays on a topic reused for
//!   equal delays) until the attempts are used up, then to the DLT;
//! * the **DLT** container (group `G-dlt`) hands dead letters to the DLT handler (default: log
//!   at ERROR); [`DltStrategy`] says what happens when that fails.
//!
//! Errors the [classifier](RetryTopicConfigurationBuilder::not_retry_on) says are not
//! retryable (looked for through the error's `source()` chain), and records past the
//! [overall timeout](RetryTopicConfigurationBuilder::timeout), go straight to the DLT.
//!
//! **Commits.** Each container commits a record's offset only after the record was handled or
//! its forward to the next topic was acknowledged by the broker, so a process that dies between
//! the two handles (or forwards) the record again: at-least-once, never lost.
//!
//! **Ordering.** As Spring documents, retry topics give up ordering: a failed record is handled
//! later, after records that came after it on its partition.
//!
//! **Differences from Spring** (see `docs/spring-differences.md`): uniform random delays use one
//! topic per attempt, named by index; Spring's reuse of one topic for the trailing attempts of
//! an exponential back-off that reached its maximum is not done (each attempt has its topic).
//!
//! ```no_run
//! # async fn demo(cluster: rekafka::cluster::Cluster) -> rekafka::Result<()> {
//! use std::time::Duration;
//! use rekafka::consumer::ConsumerConfig;
//! use rekafka::listener::ListenerConsumerRecord;
//! use rekafka::listener::retry_topic::{RetryBackOff, RetryTopicConfiguration, TopicSuffixing};
//!
//! let handle = RetryTopicConfiguration::builder()
//!     .max_attempts(3)
//!     .back_off(RetryBackOff::Fixed(Duration::from_secs(2)))
//!     .suffixing(TopicSuffixing::ByIndex)
//!     .build()
//!     .start(
//!         cluster,
//!         ConsumerConfig::new().with_group_id("billing"),
//!         "orders",
//!         |record: ListenerConsumerRecord| async move {
//!             // ... handle the record; an Err sends it on to the next retry topic
//!             Ok(())
//!         },
//!     )
//!     .await?;
//! // ...
//! handle.stop().await;
//! # Ok(()) }
//! ```
//!
//! [`Acknowledgment::nack`]: crate::listener::Acknowledgment::nack

pub mod headers;
mod run;

use std::error::Error as StdError;
use std::time::Duration;

use super::classify::Classifier;

pub use run::RetryTopicHandle;

/// How long a record waits before each retry (Spring's `@Backoff`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetryBackOff {
    /// The same delay before every retry. With [`SameIntervalTopicReuse::SingleTopic`] (the
    /// default) all retries share one topic, `<topic>-retry`.
    Fixed(Duration),
    /// `initial`, then each delay `multiplier` times the one before, at most `max`.
    Exponential {
        /// The first delay.
        initial: Duration,
        /// The growth factor (at least 1).
        multiplier: f64,
        /// The longest delay.
        max: Duration,
    },
    /// A delay drawn uniformly from `min..=max` for each retry (one topic per attempt, named by
    /// index).
    UniformRandom {
        /// The shortest delay.
        min: Duration,
        /// The longest delay.
        max: Duration,
    },
    /// One delay per retry, in order; the last is repeated if there are more retries than
    /// delays.
    Delays(Vec<Duration>),
}

impl Default for RetryBackOff {
    /// Spring's default: a fixed 1 s.
    fn default() -> Self {
        RetryBackOff::Fixed(Duration::from_secs(1))
    }
}

/// How retry topics are suffixed (Spring's `TopicSuffixingStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum TopicSuffixing {
    /// By the delay in ms: `<topic>-retry-1000`, `<topic>-retry-2000` (Spring's default). A
    /// delay used by more than one topic gets the index among them too
    /// (`<topic>-retry-5000-0`, `<topic>-retry-5000-1`).
    #[default]
    ByDelay,
    /// By the retry's index: `<topic>-retry-0`, `<topic>-retry-1`.
    ByIndex,
}

/// Whether equal fixed delays share one retry topic (Spring's `SameIntervalTopicReuseStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SameIntervalTopicReuse {
    /// One topic, `<topic>-retry`, for every retry of a [`RetryBackOff::Fixed`] back-off
    /// (Spring's default).
    #[default]
    SingleTopic,
    /// One topic per retry.
    MultipleTopics,
}

/// Whether the retry topics and the DLT are created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TopicCreation {
    /// Created at start when missing, with this many partitions and this replication factor
    /// (`None`: as the main topic).
    Auto {
        /// The partition count (`None`: the main topic's).
        partitions: Option<i32>,
        /// The replication factor (`None`: the main topic's).
        replication_factor: Option<i16>,
    },
    /// Never created: they must exist.
    Never,
}

impl Default for TopicCreation {
    /// Created as the main topic.
    fn default() -> Self {
        TopicCreation::Auto {
            partitions: None,
            replication_factor: None,
        }
    }
}

/// What happens to dead letters and to failures of the DLT handler (Spring's `DltStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum DltStrategy {
    /// A dead letter whose DLT handler fails with a retryable error is published to the DLT
    /// again, to be handled again (Spring's default, `ALWAYS_RETRY_ON_ERROR`).
    #[default]
    AlwaysRetryOnError,
    /// A dead letter whose DLT handler fails is logged and skipped (`FAIL_ON_ERROR`).
    FailOnError,
    /// No DLT: a record whose attempts are used up (or that is not retryable) is logged and
    /// skipped (`NO_DLT`).
    NoDlt,
}

/// One retry topic of a [`RetryTopology`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryTopic {
    /// The topic's name.
    pub name: String,
    /// The delay before a record on this topic is handled (`None`: drawn at random per
    /// record).
    pub delay: Option<Duration>,
    /// Whether records stay on this topic for their next attempts (a single topic for a fixed
    /// delay) until the attempts are used up.
    pub reused: bool,
}

/// The topics a [`RetryTopicConfiguration`] uses for one main topic.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryTopology {
    /// The main topic.
    pub main: String,
    /// The retry topics, in the order records go through them.
    pub retries: Vec<RetryTopic>,
    /// The dead-letter topic (`None` with [`DltStrategy::NoDlt`]).
    pub dlt: Option<String>,
}

/// Where a failed record goes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Next {
    /// To this retry topic, due after the delay.
    Retry { topic: String, delay: Duration },
    /// To the DLT.
    Dlt(String),
    /// Nowhere: logged and skipped.
    Drop,
}

/// Non-blocking retries for one listener (see the [module docs](self)). Build one with
/// [`builder`](Self::builder).
#[derive(Debug, Clone)]
pub struct RetryTopicConfiguration {
    pub(crate) max_attempts: u32,
    pub(crate) back_off: RetryBackOff,
    pub(crate) retry_suffix: String,
    pub(crate) dlt_suffix: String,
    pub(crate) suffixing: TopicSuffixing,
    pub(crate) reuse: SameIntervalTopicReuse,
    pub(crate) creation: TopicCreation,
    pub(crate) dlt_strategy: DltStrategy,
    pub(crate) classifier: Classifier,
    pub(crate) timeout: Option<Duration>,
    pub(crate) poll_timeout: Duration,
    pub(crate) ack_mode: crate::listener::AckMode,
}

/// Builds a [`RetryTopicConfiguration`]; every setting has Spring's default.
#[derive(Debug, Clone)]
pub struct RetryTopicConfigurationBuilder {
    config: RetryTopicConfiguration,
    include_mode: bool,
}

impl RetryTopicConfiguration {
    /// A builder with Spring's defaults: 3 attempts, a fixed 1 s back-off, suffixes `-retry`
    /// and `-dlt` by delay, one topic for fixed delays, topics created as the main topic,
    /// [`DltStrategy::AlwaysRetryOnError`], every error retryable except
    /// [`DeserializationFailed`](crate::listener::DeserializationFailed), no timeout.
    pub fn builder() -> RetryTopicConfigurationBuilder {
        RetryTopicConfigurationBuilder {
            config: RetryTopicConfiguration {
                max_attempts: 3,
                back_off: RetryBackOff::default(),
                retry_suffix: "-retry".into(),
                dlt_suffix: "-dlt".into(),
                suffixing: TopicSuffixing::default(),
                reuse: SameIntervalTopicReuse::default(),
                creation: TopicCreation::default(),
                dlt_strategy: DltStrategy::default(),
                classifier: Classifier::default(),
                timeout: None,
                poll_timeout: Duration::from_secs(1),
                ack_mode: crate::listener::AckMode::Batch,
            },
            include_mode: false,
        }
    }

    /// The delay before each retry (`max_attempts - 1` of them); `None` for a random one.
    fn delays(&self) -> Vec<Option<Duration>> {
        let retries = self.max_attempts.saturating_sub(1) as usize;
        (0..retries)
            .map(|i| match &self.back_off {
                RetryBackOff::Fixed(d) => Some(*d),
                RetryBackOff::Exponential {
                    initial,
                    multiplier,
                    max,
                } => {
                    let factor = multiplier
                        .max(1.0)
                        .powi(i32::try_from(i).unwrap_or(i32::MAX));
                    let ms = (initial.as_millis() as f64 * factor).min(max.as_millis() as f64);
                    Some(Duration::from_millis(ms as u64))
                }
                RetryBackOff::UniformRandom { .. } => None,
                RetryBackOff::Delays(list) => list.get(i).or(list.last()).copied(),
            })
            .collect()
    }

    /// The topics used for `main`.
    pub fn topology(&self, main: &str) -> RetryTopology {
        let delays = self.delays();
        let retry = format!("{main}{}", self.retry_suffix);
        let retries = if matches!(self.back_off, RetryBackOff::Fixed(_))
            && self.reuse == SameIntervalTopicReuse::SingleTopic
            && !delays.is_empty()
        {
            vec![RetryTopic {
                name: retry,
                delay: delays[0],
                reused: true,
            }]
        } else {
            let by_index = self.suffixing == TopicSuffixing::ByIndex
                || delays.iter().any(Option::is_none)
                || matches!(self.back_off, RetryBackOff::Fixed(_));
            delays
                .iter()
                .enumerate()
                .map(|(i, delay)| {
                    let name = match delay {
                        Some(d) if !by_index => {
                            let same: Vec<usize> = (0..delays.len())
                                .filter(|&j| delays[j] == Some(*d))
                                .collect();
                            if same.len() > 1 {
                                let k = same.iter().position(|&j| j == i).unwrap_or(0);
                                format!("{retry}-{}-{k}", d.as_millis())
                            } else {
                                format!("{retry}-{}", d.as_millis())
                            }
                        }
                        _ => format!("{retry}-{i}"),
                    };
                    RetryTopic {
                        name,
                        delay: *delay,
                        reused: false,
                    }
                })
                .collect()
        };
        RetryTopology {
            main: main.to_owned(),
            retries,
            dlt: (self.dlt_strategy != DltStrategy::NoDlt)
                .then(|| format!("{main}{}", self.dlt_suffix)),
        }
    }

    /// The delay of a retry topic: its own, or one drawn at random.
    fn delay_of(&self, topic: &RetryTopic) -> Duration {
        match (topic.delay, &self.back_off) {
            (Some(d), _) => d,
            (None, RetryBackOff::UniformRandom { min, max }) => {
                let (lo, hi) = (min.as_millis() as u64, max.as_millis() as u64);
                if hi <= lo {
                    return *min;
                }
                let mut b = [0u8; 8];
                let r = match getrandom::fill(&mut b) {
                    Ok(()) => u64::from_le_bytes(b),
                    Err(_) => 0,
                };
                Duration::from_millis(lo + r % (hi - lo + 1))
            }
            (None, _) => Duration::ZERO,
        }
    }

    /// Where a record of `source` on attempt `attempt` (from 1) that failed with `error` goes,
    /// `now` and its original timestamp in ms since the epoch (Spring's
    /// `DefaultDestinationTopicResolver`).
    pub(crate) fn next(
        &self,
        topology: &RetryTopology,
        source: &str,
        attempt: u32,
        error: &(dyn StdError + 'static),
        original_timestamp: i64,
        now: i64,
    ) -> Next {
        let retryable = self.classifier.is_retryable(error);
        let to_dlt = || match &topology.dlt {
            Some(dlt) => Next::Dlt(dlt.clone()),
            None => Next::Drop,
        };
        if topology.dlt.as_deref() == Some(source) {
            return if self.dlt_strategy == DltStrategy::AlwaysRetryOnError && retryable {
                to_dlt()
            } else {
                Next::Drop
            };
        }
        let timed_out = self.timeout.is_some_and(|t| {
            now >= original_timestamp
                .saturating_add(i64::try_from(t.as_millis()).unwrap_or(i64::MAX))
        });
        if !retryable || timed_out || attempt >= self.max_attempts {
            return to_dlt();
        }
        let index = if source == topology.main {
            0
        } else {
            match topology.retries.iter().position(|t| t.name == source) {
                Some(i) if topology.retries[i].reused => i,
                Some(i) => i + 1,
                None => return to_dlt(),
            }
        };
        match topology.retries.get(index) {
            Some(t) => Next::Retry {
                topic: t.name.clone(),
                delay: self.delay_of(t),
            },
            None => to_dlt(),
        }
    }
}

impl RetryTopicConfigurationBuilder {
    /// The number of attempts, the first (on the main topic) included. Default: 3. At least 1.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.config.max_attempts = attempts.max(1);
        self
    }

    /// The back-off between attempts. Default: [`RetryBackOff::Fixed`] 1 s.
    pub fn back_off(mut self, back_off: RetryBackOff) -> Self {
        self.config.back_off = back_off;
        self
    }

    /// The retry topics' suffix. Default: `-retry`.
    pub fn retry_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.config.retry_suffix = suffix.into();
        self
    }

    /// The DLT's suffix. Default: `-dlt`.
    pub fn dlt_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.config.dlt_suffix = suffix.into();
        self
    }

    /// How retry topics are suffixed. Default: [`TopicSuffixing::ByDelay`].
    pub fn suffixing(mut self, suffixing: TopicSuffixing) -> Self {
        self.config.suffixing = suffixing;
        self
    }

    /// Whether a fixed back-off uses one topic. Default: [`SameIntervalTopicReuse::SingleTopic`].
    pub fn same_interval_topic_reuse(mut self, reuse: SameIntervalTopicReuse) -> Self {
        self.config.reuse = reuse;
        self
    }

    /// Whether topics are created. Default: [`TopicCreation::Auto`] as the main topic.
    pub fn topic_creation(mut self, creation: TopicCreation) -> Self {
        self.config.creation = creation;
        self
    }

    /// The DLT strategy. Default: [`DltStrategy::AlwaysRetryOnError`].
    pub fn dlt_strategy(mut self, strategy: DltStrategy) -> Self {
        self.config.dlt_strategy = strategy;
        self
    }

    /// Errors of type `E` (the error itself or anywhere in its `source()` chain) are not
    /// retried: the record goes straight to the DLT (Spring's `notRetryOn`).
    pub fn not_retry_on<E: StdError + 'static>(mut self) -> Self {
        self.config.classifier.add_not_retryable::<E>();
        self
    }

    /// Only errors of the types given this way are retried; any other goes straight to the DLT
    /// (Spring's `retryOn`). The first call replaces the default classification.
    pub fn retry_on<E: StdError + 'static>(mut self) -> Self {
        if !self.include_mode {
            self.config.classifier = Classifier::empty(false);
            self.include_mode = true;
        }
        self.config.classifier.add_retryable::<E>();
        self
    }

    /// The classification of errors, whole. Default: [`Classifier::default`].
    pub fn classifier(mut self, classifier: Classifier) -> Self {
        self.config.classifier = classifier;
        self.include_mode = false;
        self
    }

    /// A record that fails when this much time has passed since its original timestamp goes to
    /// the DLT, whatever attempts it has left (Spring's `timeout`). Default: none.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = Some(timeout);
        self
    }

    /// Each container's poll timeout. Default: 1 s.
    pub fn poll_timeout(mut self, timeout: Duration) -> Self {
        self.config.poll_timeout = timeout;
        self
    }

    /// Each container's ack mode. Default: [`AckMode::Batch`](crate::listener::AckMode::Batch).
    pub fn ack_mode(mut self, mode: crate::listener::AckMode) -> Self {
        self.config.ack_mode = mode;
        self
    }

    /// The configuration.
    pub fn build(self) -> RetryTopicConfiguration {
        self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("boom")]
    struct Boom;

    #[derive(Debug, thiserror::Error)]
    #[error("fatal")]
    struct Fatal;

    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] Fatal);

    fn names(t: &RetryTopology) -> Vec<&str> {
        t.retries.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn topic_names_follow_spring() {
        let fixed = RetryTopicConfiguration::builder().build();
        let t = fixed.topology("orders");
        assert_eq!(names(&t), ["orders-retry"]);
        assert_eq!(t.dlt.as_deref(), Some("orders-dlt"));

        let multi = RetryTopicConfiguration::builder()
            .same_interval_topic_reuse(SameIntervalTopicReuse::MultipleTopics)
            .build();
        assert_eq!(names(&multi.topology("o")), ["o-retry-0", "o-retry-1"]);

        let exp = RetryTopicConfiguration::builder()
            .max_attempts(5)
            .back_off(RetryBackOff::Exponential {
                initial: Duration::from_millis(1000),
                multiplier: 2.0,
                max: Duration::from_millis(4000),
            })
            .build();
        assert_eq!(
            names(&exp.topology("o")),
            [
                "o-retry-1000",
                "o-retry-2000",
                "o-retry-4000-0",
                "o-retry-4000-1"
            ]
        );
        let by_index = RetryTopicConfiguration::builder()
            .max_attempts(4)
            .back_off(RetryBackOff::Delays(vec![Duration::from_millis(10)]))
            .suffixing(TopicSuffixing::ByIndex)
            .dlt_strategy(DltStrategy::NoDlt)
            .build();
        let t = by_index.topology("o");
        assert_eq!(names(&t), ["o-retry-0", "o-retry-1", "o-retry-2"]);
        assert_eq!(t.dlt, None);
    }

    #[test]
    fn destinations_follow_spring() {
        let c = RetryTopicConfiguration::builder()
            .max_attempts(3)
            .back_off(RetryBackOff::Delays(vec![
                Duration::from_millis(100),
                Duration::from_millis(200),
            ]))
            .suffixing(TopicSuffixing::ByIndex)
            .not_retry_on::<Fatal>()
            .timeout(Duration::from_secs(60))
            .build();
        let t = c.topology("o");
        let retry = |topic: &str, ms| Next::Retry {
            topic: topic.into(),
            delay: Duration::from_millis(ms),
        };
        assert_eq!(c.next(&t, "o", 1, &Boom, 0, 10), retry("o-retry-0", 100));
        assert_eq!(
            c.next(&t, "o-retry-0", 2, &Boom, 0, 10),
            retry("o-retry-1", 200)
        );
        assert_eq!(
            c.next(&t, "o-retry-1", 3, &Boom, 0, 10),
            Next::Dlt("o-dlt".into())
        );
        // Not retryable through the cause chain.
        assert_eq!(
            c.next(&t, "o", 1, &Wrapped(Fatal), 0, 10),
            Next::Dlt("o-dlt".into())
        );
        // Past the timeout.
        assert_eq!(
            c.next(&t, "o", 1, &Boom, 0, 60_000),
            Next::Dlt("o-dlt".into())
        );
        // A failing DLT handler: back to the DLT with a retryable error, dropped otherwise.
        assert_eq!(
            c.next(&t, "o-dlt", 3, &Boom, 0, 10),
            Next::Dlt("o-dlt".into())
        );
        assert_eq!(c.next(&t, "o-dlt", 3, &Fatal, 0, 10), Next::Drop);

        let single = RetryTopicConfiguration::builder().max_attempts(4).build();
        let t = single.topology("o");
        let second = Next::Retry {
            topic: "o-retry".into(),
            delay: Duration::from_secs(1),
        };
        assert_eq!(single.next(&t, "o", 1, &Boom, 0, 0), second);
        assert_eq!(single.next(&t, "o-retry", 3, &Boom, 0, 0), second);
        assert_eq!(
            single.next(&t, "o-retry", 4, &Boom, 0, 0),
            Next::Dlt("o-dlt".into())
        );

        let only = RetryTopicConfiguration::builder()
            .retry_on::<Boom>()
            .dlt_strategy(DltStrategy::FailOnError)
            .build();
        let t = only.topology("o");
        assert!(matches!(
            only.next(&t, "o", 1, &Boom, 0, 0),
            Next::Retry { .. }
        ));
        assert_eq!(
            only.next(&t, "o", 1, &Fatal, 0, 0),
            Next::Dlt("o-dlt".into())
        );
        assert_eq!(only.next(&t, "o-dlt", 3, &Boom, 0, 0), Next::Drop);
    }

    #[test]
    fn random_delays_stay_in_range() {
        let c = RetryTopicConfiguration::builder()
            .back_off(RetryBackOff::UniformRandom {
                min: Duration::from_millis(100),
                max: Duration::from_millis(200),
            })
            .build();
        let t = c.topology("o");
        assert_eq!(names(&t), ["o-retry-0", "o-retry-1"]);
        for _ in 0..100 {
            match c.next(&t, "o", 1, &Boom, 0, 0) {
                Next::Retry { delay, .. } => {
                    assert!(
                        delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200)
                    )
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
