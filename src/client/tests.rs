//! Unit tests of the client builder: properties, routing to the layers, and refusals.

use super::*;
use crate::ErrorKind;

/// A builder with `props` set one by one (each must be accepted): the start of the
/// property tests.
fn with_properties(props: &[(&str, &str)]) -> ClientBuilder {
    let mut b = Client::builder();
    for &(k, v) in props {
        b.set_property(k, v).unwrap_or_else(|e| panic!("{k}: {e}"));
    }
    b
}

/// What the error of a refused property must say.
#[derive(Clone, Copy)]
enum Says {
    /// The message is exactly this.
    Exactly(&'static str),
    /// The text names this.
    Naming(&'static str),
    /// Only that it is a configuration error.
    Nothing,
}
use Says::*;

/// The table-driven check of refused properties: each `(key, value, says)`, set on `b` with
/// `set_property`, must be refused with a configuration error that says `says`.
fn refuses(b: &mut ClientBuilder, cases: &[(&str, &str, Says)]) {
    for &(key, value, says) in cases {
        let e = b.set_property(key, value).unwrap_err();
        assert_eq!(e.kind(), &ErrorKind::Config, "{key}: {e}");
        match says {
            Exactly(message) => assert_eq!(e.message_text(), Some(message), "{key}"),
            Naming(named) => assert!(e.to_string().contains(named), "{key}: {e}"),
            Nothing => {}
        }
    }
}

/// The text of the `build` error of a builder with a bootstrap server and `key` = `value`.
fn build_error_with(key: &str, value: &str) -> String {
    err_text(
        Client::builder()
            .property("bootstrap.servers", "a:1")
            .property(key, value),
    )
}

/// The durations of a config, in the order: request timeout, connect timeout, metadata
/// max age, reconnect back-off and its maximum, retry back-off and its maximum, API timeout.
fn durations(c: &ClientConfig) -> [Duration; 8] {
    [
        c.request_timeout,
        c.connect_timeout,
        c.metadata_max_age,
        c.reconnect_backoff,
        c.reconnect_backoff_max,
        c.retry_backoff,
        c.retry_backoff_max,
        c.api_timeout,
    ]
}

/// Durations from milliseconds, in the order of [`durations`].
fn millis<const N: usize>(ms: [u64; N]) -> [Duration; N] {
    ms.map(Duration::from_millis)
}

fn err_text(b: ClientBuilder) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    match rt.block_on(b.build()) {
        Ok(_) => panic!("build succeeded"),
        Err(e) => {
            assert_eq!(e.kind(), &ErrorKind::Config, "{e}");
            e.to_string()
        }
    }
}

#[tokio::test]
async fn build_is_lazy_and_connect_is_not() {
    // Nothing listens on port 1: `build` does not care, `connect` fails retriably.
    let b = || {
        Client::builder()
            .bootstrap_servers(["127.0.0.1:1"])
            .connect_timeout(Duration::from_millis(500))
    };
    let client = b().build().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(!client.cluster().is_bootstrapped());
    assert_eq!(client.admin().api_timeout(), DEFAULT_API_TIMEOUT);
    client.close().await;
    let e = b().connect().await.map(|_| ()).unwrap_err();
    assert!(e.is_retriable(), "{e}");
}

#[test]
fn defaults_match_kafka() {
    let c = ClientConfig::default();
    assert_eq!(c.client_id, "rekafka");
    assert_eq!(
        durations(&c),
        millis([30_000, 10_000, 300_000, 50, 1_000, 100, 1_000, 60_000])
    );
    assert!(c.allow_auto_create_topics);
    assert_eq!(c.max_in_flight, 64);
    assert_eq!(c.max_response_size, 100 * 1024 * 1024);
    assert!(c.bootstrap_servers.is_empty());
}

#[test]
fn validation_names_the_setting() {
    let t = err_text(Client::builder());
    assert!(t.contains("bootstrap.servers"), "{t}");
    let t = err_text(Client::builder().bootstrap_servers(["nohost"]));
    assert!(t.contains("'nohost'"), "{t}");
    let t = err_text(Client::builder().bootstrap_servers(["a:notaport"]));
    assert!(t.contains("bootstrap.servers"), "{t}");
    let ok = || Client::builder().bootstrap_servers(["127.0.0.1:9092"]);
    let t = err_text(ok().request_timeout(Duration::ZERO));
    assert!(t.contains("request_timeout (request.timeout.ms)"), "{t}");
    let t = err_text(ok().max_in_flight(0));
    assert!(t.contains("max_in_flight"), "{t}");
    let t = err_text(ok().retry_backoff(Duration::from_secs(2), Duration::from_secs(1)));
    assert!(t.contains("retry.backoff.ms"), "{t}");
    let t = err_text(ok().max_response_size(10));
    assert!(t.contains("receive.message.max.bytes"), "{t}");
}

#[test]
fn properties_set_typed_settings() {
    let b = with_properties(&[
        ("bootstrap.servers", "a:1, b:2"),
        ("client.id", "app"),
        ("request.timeout.ms", "1500"),
        ("socket.connection.setup.timeout.ms", "700"),
        ("metadata.max.age.ms", "60000"),
        ("reconnect.backoff.ms", "10"),
        ("reconnect.backoff.max.ms", "200"),
        ("retry.backoff.ms", "20"),
        ("retry.backoff.max.ms", "300"),
        ("default.api.timeout.ms", "9000"),
        ("allow.auto.create.topics", "false"),
        ("max.in.flight", "8"),
        ("receive.message.max.bytes", "2048"),
    ]);
    let c = &b.config;
    assert_eq!(c.bootstrap_servers, ["a:1", "b:2"]);
    assert_eq!(c.client_id, "app");
    assert_eq!(
        durations(c),
        millis([1_500, 700, 60_000, 10, 200, 20, 300, 9_000])
    );
    assert!(!c.allow_auto_create_topics);
    assert_eq!(c.max_in_flight, 8);
    assert_eq!(c.max_response_size, 2048);
    assert!(c.validate().is_ok());
    let cc = c.cluster_config();
    assert_eq!(cc.bootstrap, ["a:1", "b:2"]);
    assert_eq!(cc.connection.client_id, "app");
    assert_eq!(cc.connection.request_timeout, Duration::from_millis(1500));
    assert_eq!(cc.connection.max_in_flight, 8);
    assert!(!cc.allow_auto_topic_creation);
}

#[test]
fn librdkafka_aliases() {
    let mut b = Client::builder();
    b.set_property("metadata.broker.list", "x:9")
        .and_then(|()| b.set_property("socket.timeout.ms", "1234"))
        .and_then(|()| b.set_property("topic.metadata.refresh.interval.ms", "5000"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.config.bootstrap_servers, ["x:9"]);
    assert_eq!(b.config.request_timeout, Duration::from_millis(1234));
    assert_eq!(b.config.metadata_max_age, Duration::from_secs(5));
}

#[test]
fn librdkafka_configurations_load() {
    let mut b = with_properties(&[
        ("metadata.broker.list", "a:1,b:2"),
        ("queue.buffering.max.ms", "15"),
        ("queue.buffering.max.kbytes", "2048"),
        ("message.timeout.ms", "60000"),
        ("fetch.wait.max.ms", "100"),
        ("statistics.interval.ms", "5000"),
        ("enable.partition.eof", "true"),
        ("batch.num.messages", "10000"),
        ("sasl.password", "hunter2"),
    ]);
    assert_eq!(b.config.bootstrap_servers, ["a:1", "b:2"]);
    // Kept under the key given (aliases) or the Java key (converted librdkafka-only keys).
    let kept: Vec<&str> = b.deferred.iter().map(|(k, _)| k.as_str()).collect();
    assert!(kept.contains(&"buffer.memory"), "{kept:?}");
    assert!(!kept.contains(&"statistics.interval.ms"), "{kept:?}");
    let mut p = ProducerConfig::default();
    for (k, v) in &b.deferred {
        p.apply_property(k, v)
            .unwrap_or_else(|e| panic!("{k}: {e}"));
    }
    assert_eq!(p.linger, Duration::from_millis(15));
    assert_eq!(p.buffer_memory, 2048 * 1024);
    assert_eq!(p.delivery_timeout, Duration::from_secs(60));
    // Secrets stay out of Debug.
    assert!(!format!("{b:?}").contains("hunter2"));
    // A truly unknown key is still an error with suggestions.
    refuses(
        &mut b,
        &[("queue.buffering.max.kbyte", "1", Naming("unknown property"))],
    );
}

#[test]
fn producer_and_consumer_properties_are_routed_and_kept() {
    // Producer/consumer keys and shared ones, each set once: kept as set, in order.
    let set_once = [
        ("acks", "1"),
        ("group.id", "g1"),
        ("auto.offset.reset", "earliest"),
        ("request.timeout.ms", "7000"),
        ("retry.backoff.ms", "250"),
        ("default.api.timeout.ms", "9000"),
    ];
    let mut props = vec![("bootstrap.servers", "a:1"), ("linger.ms", "5")];
    props.extend(set_once);
    props.extend([("client.id", "app"), ("linger.ms", "8")]);
    let b = with_properties(&props);
    // Client keys set the client config; shared keys set it too.
    assert_eq!(b.config.client_id, "app");
    assert_eq!(b.config.request_timeout, Duration::from_secs(7));
    assert_eq!(b.config.retry_backoff, Duration::from_millis(250));
    assert_eq!(b.config.api_timeout, Duration::from_secs(9));
    // Producer/consumer keys (and shared ones) are kept, once per key, last value wins.
    let kept: Vec<(&str, &str)> = b
        .deferred
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // linger.ms, set twice, is kept once, with its last value, where it was last set.
    assert_eq!(kept, [&set_once[..], &[("linger.ms", "8")]].concat());
    // client.id is the client's only.
    assert!(!kept.iter().any(|(k, _)| *k == "client.id"));
    for table in DEFERRED_PROPERTY_SOURCES {
        for k in crate::config::names(table) {
            assert!(
                ClientBuilder::property_names().any(|n| n == k),
                "{k} is not listed"
            );
        }
    }
}

#[test]
fn kept_properties_apply_to_producer_and_consumer_configs() {
    use crate::consumer::OffsetReset;
    use crate::producer::Acks;
    let b = Client::builder().properties([
        ("linger.ms", "9"),
        ("acks", "1"),
        ("group.id", "g"),
        ("auto.offset.reset", "earliest"),
        ("retry.backoff.ms", "300"),
    ]);
    assert!(b.first_error.is_none());
    let mut p = ProducerConfig::default().with_batch_size(1234);
    apply_kept(&b.deferred, &mut p, ProducerConfig::apply_property)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut c = ConsumerConfig::default();
    apply_kept(&b.deferred, &mut c, ConsumerConfig::apply_property)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(p.linger, Duration::from_millis(9));
    assert_eq!(p.acks, Acks::Leader);
    assert_eq!(p.retry_backoff, Duration::from_millis(300));
    assert_eq!(p.batch_size, 1234, "fields no property names are kept");
    assert_eq!(c.group_id.as_deref(), Some("g"));
    assert_eq!(c.auto_offset_reset, OffsetReset::Earliest);
    assert_eq!(c.retry_backoff, Duration::from_millis(300));
}

#[test]
fn refused_properties_say_why_and_keep_nothing() {
    let mut b = Client::builder();
    refuses(
        &mut b,
        &[
            // Unknown keys, with the closest known keys (client, producer and consumer).
            (
                "bootstrap.server",
                "a:1",
                Exactly("unknown property 'bootstrap.server'; did you mean 'bootstrap.servers'?"),
            ),
            ("request.timeout", "5", Naming("'request.timeout.ms'")),
            ("frobnicate", "5", Exactly("unknown property 'frobnicate'")),
            ("linger.msec", "5", Naming("'linger.ms'")),
            ("group.idd", "g", Naming("'group.id'")),
            ("enable.auto.comit", "true", Naming("'enable.auto.commit'")),
            // Bad values, naming the key and the form expected.
            (
                "request.timeout.ms",
                "soon",
                Exactly(
                    "invalid value 'soon' for property 'request.timeout.ms': expected a \
                     whole number of milliseconds (0 or more)",
                ),
            ),
            (
                "allow.auto.create.topics",
                "maybe",
                Naming("'allow.auto.create.topics'"),
            ),
            ("allow.auto.create.topics", "maybe", Naming("true or false")),
            ("max.in.flight", "-3", Naming("'max.in.flight'")),
            ("linger.ms", "soon", Naming("linger.ms")),
            ("auto.offset.reset", "sideways", Naming("auto.offset.reset")),
            ("acks", "2x", Nothing),
        ],
    );
    assert!(b.deferred.is_empty(), "bad values are not kept");
    // Deferred to build() with the chaining form.
    let t = build_error_with("clientid", "x");
    assert!(t.contains("did you mean 'client.id'?"), "{t}");
    let t = build_error_with("max.poll.records", "many");
    assert!(t.contains("max.poll.records"), "{t}");
}
