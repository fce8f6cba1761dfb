//! The tables: one per config type, each setting once.

use super::{Kind, Setting};

const MS: Kind = Kind::Millis;
const COUNT: Kind = Kind::COUNT;
const TEXT: Kind = Kind::Text;
const SECRET: Kind = Kind::Password;
const BOOL: Kind = Kind::Bool;
const BYTES64: Kind = Kind::Int {
    min: 0,
    max: i64::MAX,
};

/// `max.poll.records`, the same setting (name, default, meaning) for the consumer and the share
/// consumer: one entry that both tables list.
const MAX_POLL_RECORDS: Setting = Setting::new(
    "max.poll.records",
    COUNT,
    "500",
    "The most records one `poll` returns.",
);

/// A connection's settings ([`ConnectionConfig`](crate::connection::ConnectionConfig); also
/// accepted by [`ClientConfig`](crate::client::ClientConfig)).
pub const CONNECTION: &[Setting] = &[
    Setting::new(
        "client.id",
        TEXT,
        "rekafka",
        "The id sent with every request; brokers log it and apply quotas by it.",
    ),
    Setting::new(
        "request.timeout.ms",
        MS,
        "30000",
        "How long a request may wait for its response before the connection is closed.",
    )
    .alias(&["socket.timeout.ms"]),
    Setting::new(
        "socket.connection.setup.timeout.ms",
        MS,
        "10000",
        "How long connecting (TCP, TLS, ApiVersions, SASL) may take.",
    ),
    Setting::new(
        "reconnect.backoff.ms",
        MS,
        "50",
        "The first wait before reconnecting to a broker, doubled per failure (±20 % jitter).",
    ),
    Setting::new(
        "reconnect.backoff.max.ms",
        MS,
        "1000",
        "The longest wait before reconnecting.",
    ),
    Setting::new(
        "receive.message.max.bytes",
        Kind::POSITIVE,
        "104857600",
        "The largest response accepted from a broker.",
    ),
];

/// The client's own settings ([`ClientConfig`](crate::client::ClientConfig), beside
/// [`CONNECTION`] and [`SECURITY`]).
pub const CLIENT: &[Setting] = &[
    Setting::new(
        "bootstrap.servers",
        Kind::List,
        "",
        "The `host:port` addresses tried in turn until one answers. Required.",
    )
    .alias(&["metadata.broker.list"]),
    Setting::new(
        "metadata.max.age.ms",
        MS,
        "300000",
        "How old the metadata may get before it is refreshed in the background.",
    )
    .alias(&["topic.metadata.refresh.interval.ms"]),
    Setting::new(
        "retry.backoff.ms",
        MS,
        "100",
        "The first wait before retrying a failed request, doubled per failure.",
    ),
    Setting::new(
        "retry.backoff.max.ms",
        MS,
        "1000",
        "The longest wait before retrying a request.",
    ),
    Setting::new(
        "default.api.timeout.ms",
        MS,
        "60000",
        "How long an API call (admin operation, coordinator lookup) retries before it fails.",
    ),
    Setting::new(
        "allow.auto.create.topics",
        BOOL,
        "true",
        "Whether asking for an unknown topic's metadata creates it (if the broker allows it).",
    ),
    Setting::new(
        "max.in.flight",
        COUNT,
        "64",
        "How many requests may be pipelined on one broker connection (librdkafka's name).",
    ),
];

/// TLS and SASL ([`SecurityConfig`](crate::connection::SecurityConfig)).
pub const SECURITY: &[Setting] = &[
    Setting::new(
        "security.protocol",
        Kind::Choice(&["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]),
        "PLAINTEXT",
        "TLS and/or SASL on every connection.",
    ),
    Setting::new(
        "sasl.mechanism",
        Kind::Choice(&["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"]),
        "",
        "The SASL mechanism.",
    )
    .alias(&["sasl.mechanisms"]),
    Setting::new("sasl.username", TEXT, "", "The SASL user name."),
    Setting::new("sasl.password", SECRET, "", "The SASL password."),
    Setting::new(
        "sasl.jaas.config",
        SECRET,
        "",
        "A Java JAAS line; its `username` and `password` (or OAuth options) are read.",
    ),
    Setting::new(
        "ssl.ca.location",
        TEXT,
        "",
        "PEM file of the CA certificates to trust (default: the system's roots).",
    ),
    Setting::new("ssl.ca.pem", TEXT, "", "The CA certificates as PEM text."),
    Setting::new(
        "ssl.certificate.location",
        TEXT,
        "",
        "PEM file of the client certificate (mutual TLS).",
    ),
    Setting::new(
        "ssl.certificate.pem",
        TEXT,
        "",
        "The client certificate as PEM text.",
    ),
    Setting::new(
        "ssl.key.location",
        TEXT,
        "",
        "PEM file of the client's unencrypted private key.",
    ),
    Setting::new(
        "ssl.key.pem",
        SECRET,
        "",
        "The client's private key as PEM text.",
    ),
    Setting::new(
        "ssl.key.password",
        SECRET,
        "",
        "Refused when set: decrypt the key and use `ssl.key.location`.",
    ),
    Setting::new(
        "ssl.endpoint.identification.algorithm",
        Kind::Choice(&["https", "none", ""]),
        "https",
        "`https` checks the broker's host name against its certificate; empty or `none` does not.",
    ),
    Setting::new(
        "ssl.truststore.location",
        TEXT,
        "",
        "Refused: Java keystores are not read; use the PEM settings.",
    ),
    Setting::new(
        "ssl.truststore.password",
        SECRET,
        "",
        "Refused: Java keystores are not read.",
    ),
    Setting::new(
        "ssl.truststore.type",
        TEXT,
        "",
        "Refused: Java keystores are not read.",
    ),
    Setting::new(
        "ssl.keystore.location",
        TEXT,
        "",
        "Refused: Java keystores are not read; use the PEM settings.",
    ),
    Setting::new(
        "ssl.keystore.password",
        SECRET,
        "",
        "Refused: Java keystores are not read.",
    ),
    Setting::new(
        "ssl.keystore.type",
        TEXT,
        "",
        "Refused: Java keystores are not read.",
    ),
];

/// The producer's settings ([`ProducerConfig`](crate::producer::ProducerConfig)).
pub const PRODUCER: &[Setting] = &[
    Setting::new("acks", Kind::Choice(&["all", "-1", "1", "0"]), "all", "Acknowledgements required: all in-sync replicas (`all`, `-1`), the leader (`1`) or none (`0`).")
        .alias(&["request.required.acks"]),
    Setting::new("enable.idempotence", BOOL, "true", "Producer ids and sequence numbers: no duplicates or reordering on retries. Left unset, it turns off quietly when `acks`, `retries` or `max.in.flight.requests.per.connection` conflict (Java 3.2+)."),
    Setting::new("delivery.timeout.ms", MS, "120000", "How long a record may take from `send` to success or failure, retries included.")
        .alias(&["message.timeout.ms"]),
    Setting::new("retries", COUNT, "2147483647", "How often a batch is retried after a definite failure; `delivery.timeout.ms` is the real bound.")
        .alias(&["message.send.max.retries"]),
    Setting::new("linger.ms", MS, "5", "How long a batch waits for more records before it is sent.")
        .alias(&["queue.buffering.max.ms"]),
    Setting::new("batch.size", COUNT, "16384", "The size a batch is sent at."),
    Setting::new("rekafka.backlog.batch.size", COUNT, "1048576", "How large a batch may grow past `batch.size` while its partition has a backlog, as far as its leader's recent delivery rate allows (at or below `batch.size`: never)."),
    Setting::new("buffer.memory", BYTES64, "33554432", "Bytes of records waiting to be sent; `send` waits (up to `max.block.ms`) when it is full."),
    Setting::new("max.block.ms", MS, "60000", "How long `send` may wait for buffer space or metadata."),
    Setting::new("request.timeout.ms", MS, "30000", "How long a produce request may wait for its response."),
    Setting::new("retry.backoff.ms", MS, "100", "The first wait before a batch is retried, doubled per attempt."),
    Setting::new("retry.backoff.max.ms", MS, "1000", "The longest wait before a batch is retried."),
    Setting::new("max.in.flight.requests.per.connection", COUNT, "5", "Produce requests in flight per broker; at most 5 with idempotence."),
    Setting::new("compression.type", Kind::Choice(&["none", "gzip", "snappy", "lz4", "zstd"]), "none", "The codec of record batches.")
        .alias(&["compression.codec"]),
    Setting::new("compression.level", Kind::Int { min: i32::MIN as i64, max: i32::MAX as i64 }, "", "The codec's level (default: the codec's own).")
        .alias(&["compression.gzip.level", "compression.lz4.level", "compression.zstd.level"]),
    Setting::new("max.request.size", COUNT, "1048576", "The largest produce request, and so the largest record."),
    Setting::new("partitioner.class", Kind::Choice(&["default", "round-robin", "roundrobin", "org.apache.kafka.clients.producer.internals.DefaultPartitioner", "org.apache.kafka.clients.producer.RoundRobinPartitioner"]), "default", "How records without a partition get one: by key hash, else sticky (`default`), or `round-robin`."),
    Setting::new("transactional.id", TEXT, "", "Makes the producer transactional (see `Client::transactional_producer`)."),
    Setting::new("transaction.timeout.ms", MS, "60000", "How long a transaction may stay open before the coordinator aborts it."),
];

/// The consumer's settings ([`ConsumerConfig`](crate::consumer::ConsumerConfig)).
pub const CONSUMER: &[Setting] = &[
    Setting::new(
        "group.id",
        TEXT,
        "",
        "The consumer group; unset: no group (assign partitions yourself).",
    ),
    Setting::new(
        "group.instance.id",
        TEXT,
        "",
        "Static membership: a restarted member with the same id keeps its partitions.",
    ),
    Setting::new(
        "auto.offset.reset",
        Kind::Choice(&[
            "earliest",
            "latest",
            "none",
            "smallest",
            "largest",
            "beginning",
            "end",
            "error",
        ]),
        "latest",
        "Where to start without a committed offset: `earliest`, `latest`, or fail (`none`).",
    ),
    Setting::new(
        "enable.auto.commit",
        BOOL,
        "true",
        "Commit the positions of returned records every `auto.commit.interval.ms`.",
    ),
    Setting::new(
        "auto.commit.interval.ms",
        MS,
        "5000",
        "How often auto-commit commits.",
    ),
    Setting::new(
        "fetch.min.bytes",
        COUNT,
        "1",
        "The bytes a broker waits for before it answers a fetch.",
    ),
    Setting::new(
        "fetch.max.wait.ms",
        MS,
        "500",
        "How long a broker may hold a fetch that has less than `fetch.min.bytes`.",
    )
    .alias(&["fetch.wait.max.ms"]),
    Setting::new(
        "fetch.max.bytes",
        COUNT,
        "52428800",
        "The most bytes one fetch response may carry.",
    ),
    Setting::new(
        "max.partition.fetch.bytes",
        COUNT,
        "1048576",
        "The most bytes per partition in one fetch response.",
    )
    .alias(&["fetch.message.max.bytes"]),
    MAX_POLL_RECORDS,
    Setting::new(
        "isolation.level",
        Kind::Choice(&["read_uncommitted", "read_committed"]),
        "read_uncommitted",
        "Whether records of open and aborted transactions are returned.",
    ),
    Setting::new(
        "session.timeout.ms",
        MS,
        "45000",
        "Classic protocol: how long the coordinator waits for a heartbeat before it removes the member.",
    ),
    Setting::new(
        "heartbeat.interval.ms",
        MS,
        "3000",
        "Classic protocol: how often the member heartbeats.",
    ),
    Setting::new(
        "max.poll.interval.ms",
        MS,
        "300000",
        "The longest gap between polls before the member leaves its group.",
    ),
    Setting::new(
        "partition.assignment.strategy",
        Kind::List,
        "range,cooperative-sticky",
        "Classic protocol: the assignors offered, in order of preference (`range`, `roundrobin`, `cooperative-sticky`, or Java class names).",
    ),
    Setting::new(
        "queued.max.messages.kbytes",
        COUNT,
        "65536",
        "KiB of fetched records buffered ahead of `poll` (librdkafka's name).",
    ),
    Setting::new(
        "retry.backoff.ms",
        MS,
        "100",
        "The wait after a failed fetch or group request.",
    ),
    Setting::new(
        "default.api.timeout.ms",
        MS,
        "60000",
        "The bound of blocking calls such as `commit_sync` and `committed`.",
    ),
    Setting::new(
        "check.crcs",
        BOOL,
        "true",
        "Accepted for compatibility: every batch's CRC is always checked.",
    ),
    Setting::new(
        "group.protocol",
        Kind::Choice(&["classic", "consumer"]),
        "classic",
        "The group protocol: `classic`, or KIP-848's `consumer`.",
    ),
    Setting::new(
        "client.rack",
        TEXT,
        "",
        "The rack sent in the heartbeat (consumer protocol) or subscription (classic).",
    ),
    Setting::new(
        "group.remote.assignor",
        TEXT,
        "",
        "Consumer protocol: the broker-side assignor (`uniform`, `range`; default: the broker's).",
    ),
    Setting::new(
        "rekafka.fetch.connection",
        Kind::Choice(&["shared", "own"]),
        "own",
        "`own`: Fetch requests on a second connection per leader, so that a parked Fetch does not hold up the client's Produce and commits to that broker (the Java clients get the same from being separate clients). `shared`: one connection per broker for everything.",
    ),
];

/// The share consumer's settings ([`ShareConsumerConfig`](crate::share::ShareConsumerConfig)).
pub const SHARE: &[Setting] = &[
    Setting::new("group.id", TEXT, "", "The share group. Required."),
    Setting::new(
        "share.acknowledgement.mode",
        Kind::Choice(&["implicit", "explicit"]),
        "implicit",
        "`implicit`: the next poll accepts the records of the last; `explicit`: each record is acknowledged.",
    ),
    MAX_POLL_RECORDS,
    Setting::new(
        "fetch.min.bytes",
        COUNT,
        "1",
        "The bytes a broker waits for before it answers a share fetch.",
    ),
    Setting::new(
        "fetch.max.bytes",
        COUNT,
        "52428800",
        "The most bytes one share fetch response may carry.",
    ),
    Setting::new(
        "fetch.max.wait.ms",
        MS,
        "500",
        "How long a broker may hold a share fetch without records.",
    ),
    Setting::new(
        "max.partition.fetch.bytes",
        COUNT,
        "1048576",
        "The most bytes per partition in one share fetch response.",
    ),
    Setting::new("client.rack", TEXT, "", "The rack sent in the heartbeat."),
    Setting::new(
        "default.api.timeout.ms",
        MS,
        "60000",
        "The bound of `commit_sync` and `close`.",
    ),
    Setting::new(
        "max.poll.interval.ms",
        MS,
        "300000",
        "A member that does not poll within it leaves the group; the next poll rejoins.",
    ),
    Setting::new(
        "retry.backoff.ms",
        MS,
        "100",
        "The wait after a failed heartbeat or fetch.",
    ),
    Setting::new(
        "retry.backoff.max.ms",
        MS,
        "1000",
        "The longest wait between retries.",
    ),
];
