//! `ClientConfig`: the settings every client shares (bootstrap, connections, security,
//! timeouts), and the properties it keeps for the producer, consumer and admin it makes.

use super::*;

/// The client-level settings (connections, metadata, retries, security). Producer and consumer
/// settings live in their own config types.
///
/// Usually built through [`ClientBuilder`]; the fields are public to read, and to set on a
/// [`ClientConfig::default`] handed to [`ClientBuilder::config`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ClientConfig {
    /// The bootstrap addresses (`host:port`), tried in turn until one answers. No default; at
    /// least one is required. Property: `bootstrap.servers` (librdkafka: `metadata.broker.list`).
    pub bootstrap_servers: Vec<String>,
    /// The client id sent with every request (brokers log it and apply quotas by it). Default:
    /// `"rekafka"`. Property: `client.id`.
    pub client_id: String,
    /// How long a request may wait for its response. Default: 30 s. Property:
    /// `request.timeout.ms` (librdkafka: `socket.timeout.ms`).
    pub request_timeout: Duration,
    /// How long connecting to a broker (TCP and the ApiVersions exchange) may take. Default:
    /// 10 s. Property: `socket.connection.setup.timeout.ms`.
    pub connect_timeout: Duration,
    /// How old the metadata may get before it is refreshed in the background. Default: 5 min.
    /// Property: `metadata.max.age.ms` (librdkafka: `topic.metadata.refresh.interval.ms`).
    pub metadata_max_age: Duration,
    /// The first wait before reconnecting to a broker, doubled after each failure. Default:
    /// 50 ms. Property: `reconnect.backoff.ms`.
    pub reconnect_backoff: Duration,
    /// The longest wait before reconnecting. Default: 1 s. Property: `reconnect.backoff.max.ms`.
    pub reconnect_backoff_max: Duration,
    /// The first wait before retrying a failed request, doubled after each failure. Default:
    /// 100 ms. Property: `retry.backoff.ms`.
    pub retry_backoff: Duration,
    /// The longest wait before retrying a request. Default: 1 s. Property:
    /// `retry.backoff.max.ms`.
    pub retry_backoff_max: Duration,
    /// How long an API call (an admin operation, a coordinator lookup) keeps retrying
    /// retriable errors before it fails. Default: 60 s. Property: `default.api.timeout.ms`.
    pub api_timeout: Duration,
    /// Whether asking for the metadata of an unknown topic creates it (if the broker allows
    /// it). Default: `true`. Property: `allow.auto.create.topics`.
    pub allow_auto_create_topics: bool,
    /// How many requests may be pipelined on one broker connection. Default: 64. Property:
    /// `max.in.flight` (librdkafka's name; the producer's
    /// `max.in.flight.requests.per.connection` is a producer setting).
    pub max_in_flight: usize,
    /// The largest response accepted from a broker, in bytes. Default: 100 MiB. Property:
    /// `receive.message.max.bytes` (librdkafka's name).
    pub max_response_size: usize,
    /// TLS and SASL. Default: plaintext, no authentication. Properties: `security.protocol`,
    /// `sasl.*`, `ssl.*` (see [`SecurityConfig::SETTINGS`]).
    pub security: SecurityConfig,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            bootstrap_servers: Vec::new(),
            client_id: DEFAULT_CLIENT_ID.to_owned(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            metadata_max_age: DEFAULT_METADATA_MAX_AGE,
            reconnect_backoff: DEFAULT_RECONNECT_BACKOFF,
            reconnect_backoff_max: DEFAULT_RECONNECT_BACKOFF_MAX,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            api_timeout: DEFAULT_API_TIMEOUT,
            allow_auto_create_topics: true,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_response_size: DEFAULT_MAX_FRAME_SIZE,
            security: SecurityConfig::default(),
        }
    }
}

impl ClientConfig {
    /// The client's own settings (see [`config`](crate::config) and
    /// `docs/configuration.md`); [`apply_property`](Self::apply_property) also takes the
    /// connection's ([`ConnectionConfig::SETTINGS`](crate::connection::ConnectionConfig::SETTINGS))
    /// and [`SecurityConfig::SETTINGS`].
    pub const SETTINGS: &'static [crate::config::Setting] = crate::config::CLIENT;

    /// Every key [`apply_property`](Self::apply_property) knows (client, connection and
    /// security keys, aliases included).
    pub fn property_names() -> impl Iterator<Item = &'static str> + Clone {
        crate::config::names(Self::SETTINGS)
            .chain(crate::connection::ConnectionConfig::property_names())
    }

    /// Sets the setting named by a Java-style property key. `Ok(false)` if `key` is not a
    /// client-level key; an [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the key if the value does not
    /// parse.
    pub fn apply_property(&mut self, key: &str, value: &str) -> Result<bool> {
        let s = match crate::config::find(Self::SETTINGS, key) {
            Some(s) => s,
            None => match crate::config::find(crate::config::CONNECTION, key) {
                Some(s) => s,
                None => return self.security.apply_property(key, value),
            },
        };
        match s.key {
            "bootstrap.servers" => self.bootstrap_servers = s.list(value)?,
            "client.id" => self.client_id = s.text(value)?.unwrap_or_default(),
            "request.timeout.ms" => self.request_timeout = s.millis(value)?,
            "socket.connection.setup.timeout.ms" => self.connect_timeout = s.millis(value)?,
            "metadata.max.age.ms" => self.metadata_max_age = s.millis(value)?,
            "reconnect.backoff.ms" => self.reconnect_backoff = s.millis(value)?,
            "reconnect.backoff.max.ms" => self.reconnect_backoff_max = s.millis(value)?,
            "retry.backoff.ms" => self.retry_backoff = s.millis(value)?,
            "retry.backoff.max.ms" => self.retry_backoff_max = s.millis(value)?,
            "default.api.timeout.ms" => self.api_timeout = s.millis(value)?,
            "allow.auto.create.topics" => self.allow_auto_create_topics = s.boolean(value)?,
            "max.in.flight" => self.max_in_flight = s.number(value)?,
            "receive.message.max.bytes" => self.max_response_size = s.number(value)?,
            other => return Err(crate::config::unhandled(other)),
        }
        Ok(true)
    }

    /// Checks the settings; the [`ErrorKind::Config`](crate::ErrorKind::Config) error names the bad one by its builder
    /// method and its property key.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, key: &str, why: &str| {
            Err(Error::config(format!("{setting} ({key}) {why}")))
        };
        if self.bootstrap_servers.is_empty() {
            return bad(
                "bootstrap_servers",
                "bootstrap.servers",
                "must name at least one host:port",
            );
        }
        for addr in &self.bootstrap_servers {
            let port = addr
                .rsplit_once(':')
                .map(|(host, port)| (host, port.parse::<u16>()));
            match port {
                Some((host, Ok(p))) if !host.is_empty() && p != 0 => {}
                _ => {
                    return bad(
                        "bootstrap_servers",
                        "bootstrap.servers",
                        &format!("has '{addr}', which is not host:port"),
                    );
                }
            }
        }
        let non_zero = [
            (
                self.request_timeout,
                "request_timeout",
                "request.timeout.ms",
            ),
            (
                self.connect_timeout,
                "connect_timeout",
                "socket.connection.setup.timeout.ms",
            ),
            (
                self.metadata_max_age,
                "metadata_max_age",
                "metadata.max.age.ms",
            ),
            (self.api_timeout, "api_timeout", "default.api.timeout.ms"),
        ];
        for (d, setting, key) in non_zero {
            if d.is_zero() {
                return bad(setting, key, "must not be zero");
            }
        }
        if self.reconnect_backoff > self.reconnect_backoff_max {
            return bad(
                "reconnect_backoff",
                "reconnect.backoff.ms",
                "must not exceed reconnect_backoff_max (reconnect.backoff.max.ms)",
            );
        }
        if self.retry_backoff > self.retry_backoff_max {
            return bad(
                "retry_backoff",
                "retry.backoff.ms",
                "must not exceed retry_backoff_max (retry.backoff.max.ms)",
            );
        }
        if self.max_in_flight == 0 || self.max_in_flight > tokio::sync::Semaphore::MAX_PERMITS {
            return bad(
                "max_in_flight",
                "max.in.flight",
                "must be between 1 and 2^61",
            );
        }
        if self.max_response_size < 1024 {
            return bad(
                "max_response_size",
                "receive.message.max.bytes",
                "must be at least 1024 bytes",
            );
        }
        self.security.validate()
    }

    /// The connection settings these client settings give.
    pub fn connection_config(&self) -> ConnectionConfig {
        ConnectionConfig::default()
            .with_security(self.security.clone())
            .with_client_id(self.client_id.clone())
            .with_connect_timeout(self.connect_timeout)
            .with_request_timeout(self.request_timeout)
            .with_max_in_flight(self.max_in_flight)
            .with_max_frame_size(self.max_response_size)
            .with_reconnect_backoff(self.reconnect_backoff, self.reconnect_backoff_max)
    }

    /// The cluster settings these client settings give.
    pub fn cluster_config(&self) -> ClusterConfig {
        ClusterConfig::new(self.bootstrap_servers.clone())
            .with_connection(self.connection_config())
            .with_metadata_max_age(self.metadata_max_age)
            .with_allow_auto_topic_creation(self.allow_auto_create_topics)
            .with_retry_backoff(self.retry_backoff, self.retry_backoff_max)
            .with_coordinator_timeout(self.api_timeout)
    }
}

/// Property keys that belong to config types built later from the client (producer,
/// consumer). [`ClientBuilder::property`] accepts them, checks their value against a default
/// config of each type that knows them, and keeps them for those configs
/// ([`Client::properties`]); [`Client::producer`] and [`Client::consumer`] apply them.
pub(super) const DEFERRED_PROPERTY_SOURCES: &[&[crate::config::Setting]] = &[
    ProducerConfig::SETTINGS,
    ConsumerConfig::SETTINGS,
    crate::share::ShareConsumerConfig::SETTINGS,
];

/// Applies the kept properties that `apply` knows onto a config, in the order given.
pub(super) fn apply_kept<C>(
    kept: &[(String, String)],
    config: &mut C,
    apply: fn(&mut C, &str, &str) -> Result<bool>,
) -> Result<()> {
    for (key, value) in kept {
        apply(config, key, value)?;
    }
    Ok(())
}

/// Checks a kept producer/consumer property's value now, so that [`ClientBuilder::build`]
/// reports it (naming the key) rather than the first `producer()` or `consumer()` call.
pub(super) fn check_deferred(key: &str, value: &str) -> Result<()> {
    ProducerConfig::default().apply_property(key, value)?;
    ConsumerConfig::default().apply_property(key, value)?;
    crate::share::ShareConsumerConfig::default().apply_property(key, value)?;
    Ok(())
}
