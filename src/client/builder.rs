//! `ClientBuilder`: builds a [`Client`](super::Client) from settings and properties.

use super::*;

/// Builds a [`Client`]: set what differs from the defaults, then [`build`](Self::build).
///
/// Each setting is also reachable as a Java-style property through
/// [`property`](Self::property); a bad property is reported by `build`.
#[derive(Clone, Default)]
#[must_use]
pub struct ClientBuilder {
    pub(super) config: ClientConfig,
    pub(super) deferred: Vec<(String, String)>,
    pub(super) first_error: Option<Error>,
}

/// Secret values are shown as `(hidden)`, by the settings table
/// ([`config::display_value`](crate::config::display_value)).
impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept: Vec<(&str, &str)> = self
            .deferred
            .iter()
            .map(|(k, v)| (k.as_str(), crate::config::display_value(k, v)))
            .collect();
        f.debug_struct("ClientBuilder")
            .field("config", &self.config)
            .field("properties", &kept)
            .field("first_error", &self.first_error)
            .finish()
    }
}

impl ClientBuilder {
    /// A builder with every setting at its default (and no bootstrap servers).
    pub fn new() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Sets [`ClientConfig::bootstrap_servers`]. Required. Each item may also be a
    /// comma-separated list (`"h1:9092,h2:9092"`), as in Kafka's `bootstrap.servers`.
    pub fn bootstrap_servers<I, S>(mut self, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.bootstrap_servers = crate::cluster::split_bootstrap(servers);
        self
    }

    /// Sets [`ClientConfig::client_id`]. Default: `"rekafka"`.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = id.into();
        self
    }

    /// Sets [`ClientConfig::request_timeout`]. Default: 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Sets [`ClientConfig::connect_timeout`]. Default: 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Sets [`ClientConfig::metadata_max_age`]. Default: 5 min.
    pub fn metadata_max_age(mut self, max_age: Duration) -> Self {
        self.config.metadata_max_age = max_age;
        self
    }

    /// Sets [`ClientConfig::reconnect_backoff`] and [`ClientConfig::reconnect_backoff_max`].
    /// Default: 50 ms and 1 s.
    pub fn reconnect_backoff(mut self, backoff: Duration, max: Duration) -> Self {
        self.config.reconnect_backoff = backoff;
        self.config.reconnect_backoff_max = max;
        self
    }

    /// Sets [`ClientConfig::retry_backoff`] and [`ClientConfig::retry_backoff_max`]. Default:
    /// 100 ms and 1 s.
    pub fn retry_backoff(mut self, backoff: Duration, max: Duration) -> Self {
        self.config.retry_backoff = backoff;
        self.config.retry_backoff_max = max;
        self
    }

    /// Sets [`ClientConfig::api_timeout`]. Default: 60 s.
    pub fn api_timeout(mut self, timeout: Duration) -> Self {
        self.config.api_timeout = timeout;
        self
    }

    /// Sets [`ClientConfig::allow_auto_create_topics`]. Default: `true`.
    pub fn allow_auto_create_topics(mut self, allow: bool) -> Self {
        self.config.allow_auto_create_topics = allow;
        self
    }

    /// Sets [`ClientConfig::max_in_flight`]. Default: 64.
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = max;
        self
    }

    /// Sets [`ClientConfig::max_response_size`]. Default: 100 MiB.
    pub fn max_response_size(mut self, bytes: usize) -> Self {
        self.config.max_response_size = bytes;
        self
    }

    /// Replaces every client-level setting at once.
    pub fn config(mut self, config: ClientConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets a Java-style property (`"request.timeout.ms"`, `"30000"`). An unknown key or a bad
    /// value is reported by [`build`](Self::build) (the first one); use
    /// [`set_property`](Self::set_property) to check at once.
    pub fn property(mut self, key: impl AsRef<str>, value: impl AsRef<str>) -> Self {
        if let Err(e) = self.set_property(key.as_ref(), value.as_ref())
            && self.first_error.is_none()
        {
            self.first_error = Some(e);
        }
        self
    }

    /// Sets every property of `properties`, as [`property`](Self::property).
    pub fn properties<I, K, V>(mut self, properties: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: AsRef<str>,
    {
        for (k, v) in properties {
            self = self.property(k, v);
        }
        self
    }

    /// Sets a Java-style property now: an [`ErrorKind::Config`](crate::ErrorKind::Config)
    /// error for an unknown key (with the closest known keys) or a bad value (naming the key
    /// and the expected form).
    ///
    /// A client key sets the [`ClientConfig`]; a producer or consumer key is kept for the
    /// producers and consumers made from the client (see [`Client::producer`]); a key known to
    /// both does both (see the [module docs](crate::client#properties)).
    pub fn set_property(&mut self, key: &str, value: &str) -> Result<()> {
        let key = key.trim();
        // librdkafka-only keys: mapped to their Java key, or accepted without effect (both
        // logged by `translate`).
        let translated;
        let (key, value) = match crate::config::translate(key, value) {
            None => (key, value),
            Some(Err(_no_effect)) => return Ok(()),
            Some(Ok((java, v))) => {
                translated = v;
                (java, translated.as_ref())
            }
        };
        if let Some(s) = crate::config::ALL
            .iter()
            .find_map(|t| crate::config::find(t, key))
            && s.key != key
        {
            tracing::debug!(alias = key, key = s.key, "property read under its Java key");
        }
        let deferred = DEFERRED_PROPERTY_SOURCES
            .iter()
            .any(|table| crate::config::find(table, key).is_some());
        // The registry: each config type the client owns, in turn (the client's first: its
        // messages name the expected form).
        let client = self.config.apply_property(key, value)?;
        if deferred {
            check_deferred(key, value)?;
            self.deferred.retain(|(k, _)| k != key);
            self.deferred.push((key.to_owned(), value.to_owned()));
        }
        if client || deferred {
            Ok(())
        } else {
            Err(properties::unknown_property(key, Self::property_names()))
        }
    }

    /// Every property key the builder accepts (aliases included; not the librdkafka-only
    /// keys of [`config::LIBRDKAFKA`](crate::config::LIBRDKAFKA), which are accepted too).
    pub fn property_names() -> impl Iterator<Item = &'static str> {
        ClientConfig::property_names().chain(
            DEFERRED_PROPERTY_SOURCES
                .iter()
                .flat_map(|table| crate::config::names(table)),
        )
    }

    /// Validates the settings (the first bad property, then [`ClientConfig::validate`]: an
    /// [`ErrorKind::Config`](crate::ErrorKind::Config) error naming the setting) and makes the
    /// client, without waiting for any broker: it bootstraps in the background and retries
    /// with back-off while no bootstrap address answers (see [Connecting](crate::client#connecting)), so
    /// it can be built while the brokers are down. Must be called inside a tokio runtime.
    pub async fn build(self) -> Result<Client> {
        self.make(true)
    }

    /// As [`build`](Self::build), then bootstraps at once: tries each bootstrap address in
    /// turn until one answers a Metadata request, and fails with the last address's error
    /// (retriable, e.g. [`ErrorKind::Disconnected`](crate::ErrorKind::Disconnected)) if none
    /// does. For tools that should fail fast rather than wait for the brokers.
    pub async fn connect(self) -> Result<Client> {
        // No background bootstrap: this one is the bootstrap.
        let client = self.make(false)?;
        if let Err(e) = client.inner.cluster.refresh_topics::<&str>(&[]).await {
            client.close().await;
            return Err(e);
        }
        Ok(client)
    }

    fn make(self, lazily: bool) -> Result<Client> {
        if let Some(e) = self.first_error {
            return Err(e);
        }
        self.config.validate()?;
        let config = self.config.cluster_config();
        let cluster = if lazily {
            Cluster::connect_lazily(config)?
        } else {
            Cluster::new(config)?
        };
        Ok(Client {
            inner: Arc::new(ClientInner {
                config: self.config,
                cluster,
                deferred: self.deferred,
                producers: std::sync::Mutex::default(),
                closers: Arc::default(),
            }),
        })
    }
}
