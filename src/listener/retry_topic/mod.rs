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
//!   at ERROR); [`DltStrategy`] says what happens when that fails. Errors of given types can be
//!   routed to DLTs of their own ([`dlt_route`](RetryTopicConfigurationBuilder::dlt_route),
//!   e.g. `orders-fatal-dlt`, group `G-fatal-dlt`), handled by the same DLT handler.
//!
//! **Topics.** Named as Spring names them (see [`RetryTopicConfiguration::topology`]): with
//! the default [`SameIntervalTopicReuse::SingleTopic`], the trailing retries at the same delay
//! share one topic (all retries of a fixed back-off: `orders-retry`; those of an exponential
//! back-off that reached its maximum: `orders-retry-1000`, `orders-retry-2000`,
//! `orders-retry-4000` for 1 s doubling up to 4 s and 5 attempts, the last topic serving the
//! 4th and 5th attempts); [`SameIntervalTopicReuse::MultipleTopics`] gives each retry its
//! topic (`orders-retry-4000-0`, `orders-retry-4000-1`).
//!
//! Errors the [classifier](RetryTopicConfigurationBuilder::not_retry_on) says are not
//! retryable (looked for through the error's `source()` chain), and records past the
//! [overall timeout](RetryTopicConfigurationBuilder::timeout), go straight to the DLT.
//!
//! **Typed records.** [`start_typed`](RetryTopicConfiguration::start_typed) runs the same
//! containers over a key and a value deserializer: the handler gets
//! [`TypedRecord`](crate::listener::TypedRecord)s, and a record that does not deserialize goes
//! straight to the DLT with its raw bytes.
//!
//! **Commits.** Each container commits a record's offset only after the record was handled or
//! its forward to the next topic was acknowledged by the broker, so a process that dies between
//! the two handles (or forwards) the record again: at-least-once, never lost.
//!
//! **Ordering.** As Spring documents, retry topics give up ordering: a failed record is handled
//! later, after records that came after it on its partition.
//!
//! **Differences from Spring** (see `docs/spring-differences.md`): uniform random delays use one
//! topic per attempt, named by index.
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

pub use run::{RetryTopicHandle, RetryTopicSource};

/// How long a record waits before each retry (Spring's `@Backoff`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RetryBackOff {
    /// The same delay before every retry. With [`SameIntervalTopicReuse::SingleTopic`] (the
    /// default) all retries share one topic, `<topic>-retry`; with
    /// [`SameIntervalTopicReuse::MultipleTopics`] each has its own, named by index.
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

/// Whether the trailing retries that share one delay share one retry topic (Spring's
/// `SameIntervalTopicReuseStrategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SameIntervalTopicReuse {
    /// The trailing retries with the last delay share one topic, on which a record stays until
    /// its attempts are used up (Spring's default since 3.2): every retry of a
    /// [`RetryBackOff::Fixed`] back-off (`<topic>-retry`), the retries of an exponential
    /// back-off once it reached its maximum. Only the trailing delays may repeat: equal delays
    /// followed by a different one make [`start`](RetryTopicConfiguration::start) fail, as
    /// Spring refuses them.
    #[default]
    SingleTopic,
    /// One topic per retry (Spring's `MULTIPLE_TOPICS`).
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
    /// The DLTs of the [DLT routes](RetryTopicConfigurationBuilder::dlt_route), in the order
    /// the routes were given (`<topic><route suffix><DLT suffix>`; none with
    /// [`DltStrategy::NoDlt`]).
    pub routed_dlts: Vec<String>,
}

impl RetryTopology {
    /// Whether `topic` is the DLT or a routed DLT.
    pub fn is_dlt(&self, topic: &str) -> bool {
        self.dlt.as_deref() == Some(topic) || self.routed_dlts.iter().any(|t| t == topic)
    }
}

/// A DLT for errors of given types (Spring's `dltRoutingRules` /
/// `@ExceptionBasedDltDestination`): a record that failed for the last time with one of them
/// (the error itself or anywhere in its `source()` chain) goes to `<topic><suffix><DLT suffix>`
/// instead of the DLT. Made with [`RetryTopicConfigurationBuilder::dlt_route`].
#[derive(Debug, Clone)]
pub struct DltRoute {
    suffix: String,
    types: Classifier,
}

impl DltRoute {
    /// The route's suffix (`-fatal` routes to `<topic>-fatal-dlt`).
    pub fn suffix(&self) -> &str {
        &self.suffix
    }

    /// Whether `error` or one of its sources is of a type of this route.
    pub fn matches(&self, error: &(dyn StdError + 'static)) -> bool {
        self.types.is_retryable(error)
    }
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
    pub(crate) dlt_routes: Vec<DltRoute>,
    pub(crate) classifier: Classifier,
    pub(crate) timeout: Option<Duration>,
    pub(crate) poll_timeout: Duration,
    pub(crate) ack_mode: crate::listener::AckMode,
    pub(crate) retain_all_retry_header_values: bool,
}

/// Builds a [`RetryTopicConfiguration`]; every setting has Spring's default.
#[derive(Debug, Clone)]
pub struct RetryTopicConfigurationBuilder {
    config: RetryTopicConfiguration,
    include_mode: bool,
}

impl RetryTopicConfiguration {
    /// A builder with Spring's defaults: 3 attempts, a fixed 1 s back-off, suffixes `-retry`
    /// and `-dlt` by delay, one topic for the trailing retries at the same delay, topics
    /// created as the main topic, [`DltStrategy::AlwaysRetryOnError`], no DLT routes, every
    /// error retryable except [`DeserializationFailed`](crate::listener::DeserializationFailed),
    /// no timeout, the retry headers of every forward retained.
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
                dlt_routes: Vec::new(),
                classifier: Classifier::default(),
                timeout: None,
                poll_timeout: Duration::from_secs(1),
                ack_mode: crate::listener::AckMode::Batch,
                retain_all_retry_header_values: true,
            },
            include_mode: false,
        }
    }

    /// The delay before each retry (`max_attempts - 1` of them); `None` for a random one. An
    /// exponential back-off grows as Spring's `ExponentialBackOff` does: each delay is the one
    /// before times the multiplier, truncated to whole ms, at most `max`.
    fn delays(&self) -> Vec<Option<Duration>> {
        let retries = self.max_attempts.saturating_sub(1) as usize;
        let mut exp_current: Option<u64> = None;
        (0..retries)
            .map(|i| match &self.back_off {
                RetryBackOff::Fixed(d) => Some(*d),
                RetryBackOff::Exponential {
                    initial,
                    multiplier,
                    max,
                } => {
                    let max = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
                    let next = match exp_current {
                        None => u64::try_from(initial.as_millis()).unwrap_or(u64::MAX),
                        Some(c) if c >= max => max,
                        Some(c) => (c as f64 * multiplier.max(1.0)) as u64,
                    }
                    .min(max);
                    exp_current = Some(next);
                    Some(Duration::from_millis(next))
                }
                RetryBackOff::UniformRandom { .. } => None,
                RetryBackOff::Delays(list) => list.get(i).or(list.last()).copied(),
            })
            .collect()
    }

    /// The topics used for `main`, named as Spring's `DestinationTopicPropertiesFactory` names
    /// them:
    ///
    /// * with [`SameIntervalTopicReuse::SingleTopic`] (the default), the trailing retries that
    ///   share the last delay (a fixed back-off, or an exponential one that reached its maximum)
    ///   share one topic, on which a record stays until its attempts are used up; a single
    ///   retry topic is named `<topic><retry suffix>` (`orders-retry`);
    /// * otherwise each retry has its topic, suffixed by index when
    ///   [`TopicSuffixing::ByIndex`] is set or every delay is the same (`orders-retry-0`), else by
    ///   its delay in ms (`orders-retry-1000`), with the index among the topics of the same
    ///   delay appended under [`SameIntervalTopicReuse::MultipleTopics`]
    ///   (`orders-retry-4000-0`, `orders-retry-4000-1`);
    /// * random delays ([`RetryBackOff::UniformRandom`]) are suffixed by index.
    ///
    /// The DLTs follow: one per [DLT routing rule](RetryTopicConfigurationBuilder::dlt_route),
    /// in the order given, then the DLT.
    pub fn topology(&self, main: &str) -> RetryTopology {
        let delays = self.delays();
        let retry = format!("{main}{}", self.retry_suffix);
        let n = delays.len();
        let single = self.reuse == SameIntervalTopicReuse::SingleTopic;
        let count = |d: &Option<Duration>| match d {
            Some(_) => delays.iter().filter(|x| *x == d).count(),
            None => 1,
        };
        let by_index = self.suffixing == TopicSuffixing::ByIndex
            || delays.iter().any(Option::is_none)
            || (n > 1 && delays.iter().all(|d| *d == delays[0]));
        let reusable_attempts = match delays.last() {
            Some(last) if single && n > 1 => count(last) - 1,
            _ => 0,
        };
        let amount = n - reusable_attempts;
        let retries = (0..amount)
            .map(|i| {
                let delay = delays[i];
                let name = if single && amount == 1 {
                    retry.clone()
                } else {
                    match delay {
                        Some(d) if !by_index => {
                            let first = delays.iter().position(|x| *x == delay).unwrap_or(i);
                            if !single && count(&delay) > 1 {
                                format!("{retry}-{}-{}", d.as_millis(), i - first)
                            } else {
                                format!("{retry}-{}", d.as_millis())
                            }
                        }
                        _ => format!("{retry}-{i}"),
                    }
                };
                RetryTopic {
                    name,
                    delay,
                    reused: single && count(&delay) > 1,
                }
            })
            .collect();
        RetryTopology {
            main: main.to_owned(),
            retries,
            dlt: (self.dlt_strategy != DltStrategy::NoDlt)
                .then(|| format!("{main}{}", self.dlt_suffix)),
            routed_dlts: if self.dlt_strategy == DltStrategy::NoDlt {
                Vec::new()
            } else {
                self.dlt_routes
                    .iter()
                    .map(|r| format!("{main}{}{}", r.suffix, self.dlt_suffix))
                    .collect()
            },
        }
    }

    /// Refuses a topology Spring refuses: a topic reused for equal delays that is not the last
    /// retry topic (equal delays that are not the trailing ones, with
    /// [`SameIntervalTopicReuse::SingleTopic`]).
    pub(crate) fn check(&self, topology: &RetryTopology) -> crate::Result<()> {
        let last = topology.retries.len().saturating_sub(1);
        match topology.retries.iter().position(|t| t.reused) {
            Some(i) if i != last => Err(crate::Error::config(format!(
                "retry topic {} would be reused for equal delays but is not the last retry \
                 topic: only the trailing delays may repeat with \
                 SameIntervalTopicReuse::SingleTopic (use MultipleTopics)",
                topology.retries[i].name
            ))),
            _ => Ok(()),
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

    /// The topic a record of `source` (a topic of `topology`) on attempt `attempt` (from 1,
    /// its [`headers::attempts`]) that failed with `error`, `elapsed` after its original
    /// timestamp, is forwarded to: a retry topic (the same one for a reused topic), a DLT, or
    /// `None` when it is logged and skipped (Spring's `DefaultDestinationTopicResolver`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use rekafka::listener::retry_topic::RetryTopicConfiguration;
    ///
    /// let config = RetryTopicConfiguration::builder().max_attempts(3).build();
    /// let t = config.topology("orders");
    /// let e = std::fmt::Error;
    /// let next = |source, attempt| config.next_topic(&t, source, attempt, &e, Duration::ZERO);
    /// assert_eq!(next("orders", 1).as_deref(), Some("orders-retry"));
    /// assert_eq!(next("orders-retry", 2).as_deref(), Some("orders-retry"));
    /// assert_eq!(next("orders-retry", 3).as_deref(), Some("orders-dlt"));
    /// ```
    pub fn next_topic(
        &self,
        topology: &RetryTopology,
        source: &str,
        attempt: u32,
        error: &(dyn StdError + 'static),
        elapsed: Duration,
    ) -> Option<String> {
        let elapsed = i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX);
        match self.next(topology, source, attempt, error, 0, elapsed) {
            Next::Retry { topic, .. } | Next::Dlt(topic) => Some(topic),
            Next::Drop => None,
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
        // The first route (in the order given) for the error's type, else the DLT.
        let to_dlt = || {
            let routed = self
                .dlt_routes
                .iter()
                .zip(&topology.routed_dlts)
                .find(|(route, _)| route.matches(error))
                .map(|(_, topic)| topic);
            match routed.or(topology.dlt.as_ref()) {
                Some(dlt) => Next::Dlt(dlt.clone()),
                None => Next::Drop,
            }
        };
        if topology.is_dlt(source) {
            // A failing DLT handler: back to the same DLT, or (from a routed DLT) on to the
            // DLT, or dropped (from the DLT).
            return if self.dlt_strategy == DltStrategy::AlwaysRetryOnError && retryable {
                Next::Dlt(source.to_owned())
            } else if topology.dlt.as_deref() == Some(source) {
                Next::Drop
            } else {
                match &topology.dlt {
                    Some(dlt) => Next::Dlt(dlt.clone()),
                    None => Next::Drop,
                }
            };
        }
        let timed_out = self.timeout.is_some_and(|t| {
            now > original_timestamp
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

    /// Whether the trailing retries at the same delay share one topic. Default:
    /// [`SameIntervalTopicReuse::SingleTopic`].
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

    /// Records that go to a DLT (their attempts used up, not retryable, or past the timeout)
    /// with an error of type `E` (the error itself or anywhere in its `source()` chain) go to
    /// `<topic><suffix><DLT suffix>` (e.g. `orders-fatal-dlt` for `-fatal`) instead of the
    /// DLT (Spring's `dltRoutingRules` / `@ExceptionBasedDltDestination`). Call again with the
    /// same suffix to add types to a route. The routes are tried in the order their suffixes
    /// were first given; the first whose types match wins. Each routed DLT is created with the
    /// others, has its own container (group `G<suffix><DLT suffix>`) and the DLT handler. A
    /// routed DLT's handler that fails and is not retried there (see [`DltStrategy`]) sends
    /// the record on to the DLT. No routes by default; none apply with [`DltStrategy::NoDlt`].
    ///
    /// ```
    /// use rekafka::listener::retry_topic::RetryTopicConfiguration;
    ///
    /// #[derive(Debug, thiserror::Error)]
    /// #[error("invalid order")]
    /// struct InvalidOrder;
    ///
    /// let config = RetryTopicConfiguration::builder()
    ///     .not_retry_on::<InvalidOrder>()
    ///     .dlt_route::<InvalidOrder>("-invalid")
    ///     .build();
    /// let topology = config.topology("orders");
    /// assert_eq!(topology.routed_dlts, ["orders-invalid-dlt"]);
    /// assert_eq!(topology.dlt.as_deref(), Some("orders-dlt"));
    /// ```
    pub fn dlt_route<E: StdError + 'static>(mut self, suffix: impl Into<String>) -> Self {
        let suffix = suffix.into();
        match self
            .config
            .dlt_routes
            .iter_mut()
            .find(|r| r.suffix == suffix)
        {
            Some(route) => {
                route.types.add_retryable::<E>();
            }
            None => {
                let mut types = Classifier::empty(false);
                types.add_retryable::<E>();
                self.config.dlt_routes.push(DltRoute { suffix, types });
            }
        }
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

    /// Whether a forwarded record keeps the `retry_topic-attempts`,
    /// `retry_topic-backoff-timestamp` and `retry_topic-original-timestamp` headers of its
    /// earlier forwards (each forward appends its own; readers take the last), as Spring's
    /// `DeadLetterPublishingRecovererFactory.setRetainAllRetryHeaderValues` does. `false`:
    /// only the latest forward's values are kept (smaller records). Default: `true`, as
    /// Spring.
    pub fn retain_all_retry_header_values(mut self, retain: bool) -> Self {
        self.config.retain_all_retry_header_values = retain;
        self
    }

    /// The configuration.
    pub fn build(self) -> RetryTopicConfiguration {
        self.config
    }
}

#[cfg(test)]
mod tests;
