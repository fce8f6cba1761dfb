package rekafka.spring;

import java.io.File;
import java.io.IOException;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.Consumer;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetOutOfRangeException;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.DefaultShareConsumerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.AcknowledgingMessageListener;
import org.springframework.kafka.listener.BatchAcknowledgingMessageListener;
import org.springframework.kafka.listener.BatchListenerFailedException;
import org.springframework.kafka.listener.CommonContainerStoppingErrorHandler;
import org.springframework.kafka.listener.CommonDelegatingErrorHandler;
import org.springframework.kafka.listener.CommonErrorHandler;
import org.springframework.kafka.listener.CommonLoggingErrorHandler;
import org.springframework.kafka.listener.ConsumerAwareListenerErrorHandler;
import org.springframework.kafka.listener.ConsumerAwareRecordRecoverer;
import org.springframework.kafka.listener.ConsumerRecordRecoverer;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.DefaultAfterRollbackProcessor;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.listener.FailedRecordProcessor;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.listener.MessageListenerContainer;
import org.springframework.kafka.listener.MessageListener;
import org.springframework.kafka.listener.ShareKafkaMessageListenerContainer;
import org.springframework.kafka.listener.RetryListener;
import org.springframework.kafka.listener.adapter.BatchMessagingMessageListenerAdapter;
import org.springframework.kafka.listener.adapter.HandlerAdapter;
import org.springframework.kafka.listener.adapter.RecordMessagingMessageListenerAdapter;
import org.springframework.kafka.support.Acknowledgment;
import org.springframework.kafka.support.serializer.DeserializationException;
import org.springframework.kafka.support.serializer.ErrorHandlingDeserializer;
import org.springframework.kafka.support.serializer.SerializationUtils;
import org.springframework.kafka.transaction.KafkaTransactionManager;
import org.springframework.messaging.handler.annotation.support.DefaultMessageHandlerMethodFactory;
import org.springframework.util.backoff.BackOff;
import org.springframework.util.backoff.ExponentialBackOff;
import org.springframework.util.backoff.FixedBackOff;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * Runs every scenario of rekafka's Spring conformance harness through Spring for Apache Kafka's
 * own listener container and writes one observation log (JSON lines) per scenario.
 *
 * <pre>
 * java -cp target/spring-runner-0.1.0.jar:target/lib/* rekafka.spring.Runner \
 *     --bootstrap HOST:PORT --scenarios DIR --out DIR [--only a,b] [--parallel N]
 * </pre>
 *
 * The log format is described in protocol-tests/spring/README.md; the Rust runner writes the
 * same.
 */
public final class Runner {

    static final ObjectMapper JSON = new ObjectMapper();
    static final long BASE_TIMESTAMP = 1_700_000_000_000L;
    static final String REPUBLISH_COUNT = "rekafka_republish-count";

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 0; i + 1 < args.length; i += 2) {
            a.put(args[i], args[i + 1]);
        }
        String bootstrap = a.getOrDefault("--bootstrap", System.getenv("REKAFKA_BOOTSTRAP"));
        if (bootstrap == null || bootstrap.isEmpty()) {
            System.err.println("no --bootstrap and REKAFKA_BOOTSTRAP is not set");
            System.exit(2);
        }
        Path scenarios = Path.of(a.getOrDefault("--scenarios", "."));
        Path out = Path.of(a.getOrDefault("--out", "out"));
        Files.createDirectories(out);
        Set<String> only = a.containsKey("--only")
                ? new HashSet<>(Arrays.asList(a.get("--only").split(","))) : null;
        int parallel = Integer.parseInt(a.getOrDefault("--parallel", "4"));
        String runId = a.getOrDefault("--run-id", "sp" + Long.toString(System.currentTimeMillis(), 36));

        List<File> files = new ArrayList<>();
        File[] listed = scenarios.toFile().listFiles((d, n) -> n.endsWith(".json"));
        if (listed == null) {
            System.err.println("no scenario directory " + scenarios);
            System.exit(2);
        }
        Arrays.sort(listed);
        for (File f : listed) {
            String name = f.getName().replace(".json", "");
            if (only == null || only.contains(name)) {
                files.add(f);
            }
        }
        ExecutorService pool = Executors.newFixedThreadPool(parallel);
        List<Future<?>> futures = new ArrayList<>();
        AtomicInteger failures = new AtomicInteger();
        for (File f : files) {
            futures.add(pool.submit(() -> {
                String name = f.getName().replace(".json", "");
                long t0 = System.currentTimeMillis();
                try {
                    JsonNode sc = JSON.readTree(f);
                    ScenarioRun run = new ScenarioRun(bootstrap, runId, name, sc);
                    List<String> log = run.run();
                    Files.write(out.resolve(name + ".jsonl"), log, StandardCharsets.UTF_8);
                    System.err.printf("[spring] %s: %d events in %d ms%n", name, log.size(),
                            System.currentTimeMillis() - t0);
                }
                catch (Throwable e) {
                    failures.incrementAndGet();
                    System.err.println("[spring] " + name + " failed: " + e);
                    e.printStackTrace();
                    try {
                        ObjectNode err = JSON.createObjectNode();
                        err.put("type", "runner_error");
                        err.put("error", e.toString());
                        Files.write(out.resolve(name + ".jsonl"), List.of(JSON.writeValueAsString(err)),
                                StandardCharsets.UTF_8);
                    }
                    catch (IOException io) {
                        // nothing more to do
                    }
                }
            }));
        }
        for (Future<?> fu : futures) {
            fu.get();
        }
        pool.shutdown();
        System.exit(failures.get() == 0 ? 0 : 1);
    }

    /** One scenario's run. */
    static final class ScenarioRun {
        final String bootstrap;
        final String prefix;
        final String name;
        final JsonNode sc;
        final String input;
        final String group;
        final List<String> log = new ArrayList<>();
        final AtomicLong lastEvent = new AtomicLong(System.currentTimeMillis());
        final Map<String, Integer> attempts = new ConcurrentHashMap<>();
        final Map<String, AtomicInteger> valueInvocations = new ConcurrentHashMap<>();
        final AtomicInteger recovererCalls = new AtomicInteger();
        final Map<String, JsonNode> failures = new HashMap<>();
        final boolean transactional;
        final boolean batch;
        KafkaTemplate<Object, Object> template;

        ScenarioRun(String bootstrap, String runId, String name, JsonNode sc) {
            this.bootstrap = bootstrap;
            this.prefix = runId + "-" + name + "-";
            this.name = name;
            this.sc = sc;
            this.input = topic(sc.path("input_topic").asText("in"));
            this.group = prefix + "group";
            this.transactional = sc.path("transactional").asBoolean(false);
            this.batch = "batch".equals(sc.path("listener").asText("record"));
            for (JsonNode f : sc.path("failures")) {
                failures.put(f.path("value").asText(), f);
            }
        }

        String topic(String logical) {
            return prefix + logical;
        }

        String norm(String s) {
            return s == null ? null : s.replace(prefix, "");
        }

        synchronized int logSize() {
            return log.size();
        }

        /** At the safety cap the container's later events are not recorded (see the Rust runner). */
        volatile boolean frozen;

        synchronized void event(ObjectNode e) {
            if (frozen) {
                return;
            }
            try {
                log.add(JSON.writeValueAsString(e));
            }
            catch (IOException ex) {
                throw new IllegalStateException(ex);
            }
            lastEvent.set(System.currentTimeMillis());
        }

        ObjectNode ev(String type) {
            ObjectNode e = JSON.createObjectNode();
            e.put("type", type);
            return e;
        }

        ObjectNode ev(String type, ConsumerRecord<?, ?> r) {
            ObjectNode e = ev(type);
            e.put("topic", norm(r.topic()));
            e.put("p", r.partition());
            e.put("o", r.offset());
            return e;
        }

        /** The harness error kinds in the exception's cause chain, e.g. "Wrapper(Fatal)". */
        static String kind(Throwable t) {
            List<String> kinds = new ArrayList<>();
            Set<Throwable> seen = new HashSet<>();
            for (Throwable c = t; c != null && seen.add(c); c = c.getCause()) {
                if (c.getClass().getEnclosingClass() == Errors.class) {
                    kinds.add(c.getClass().getSimpleName());
                }
                else if (c instanceof DeserializationException) {
                    kinds.add("Deserialization");
                }
                else if (c.getClass() == RuntimeException.class) {
                    kinds.add("Plain");
                }
            }
            if (kinds.isEmpty()) {
                return "Other:" + t.getClass().getSimpleName();
            }
            StringBuilder sb = new StringBuilder(kinds.get(0));
            for (int i = 1; i < kinds.size(); i++) {
                sb.append('(').append(kinds.get(i));
            }
            for (int i = 1; i < kinds.size(); i++) {
                sb.append(')');
            }
            return sb.toString();
        }

        /** The message of the outermost harness error in the chain. */
        static String harnessMessage(Throwable t) {
            Set<Throwable> seen = new HashSet<>();
            for (Throwable c = t; c != null && seen.add(c); c = c.getCause()) {
                if (c.getClass().getEnclosingClass() == Errors.class || c.getClass() == RuntimeException.class) {
                    return c.getMessage();
                }
            }
            return null;
        }

        static String text(byte[] b) {
            if (b == null) {
                return null;
            }
            try {
                String s = StandardCharsets.UTF_8.newDecoder().decode(java.nio.ByteBuffer.wrap(b)).toString();
                for (int i = 0; i < s.length(); i++) {
                    char ch = s.charAt(i);
                    if (ch < 0x20 && ch != '\n' && ch != '\t' && ch != '\r') {
                        return null;
                    }
                }
                return s;
            }
            catch (java.nio.charset.CharacterCodingException e) {
                return null;
            }
        }

        static String hex(byte[] b) {
            if (b == null) {
                return null;
            }
            StringBuilder sb = new StringBuilder();
            for (byte x : b) {
                sb.append(String.format("%02x", x));
            }
            return sb.toString();
        }

        void putBytes(ObjectNode e, String field, byte[] b) {
            String t = text(b);
            if (b == null) {
                e.putNull(field);
            }
            else if (t != null) {
                e.put(field, norm(t));
            }
            else {
                e.put(field + "_hex", hex(b));
            }
        }

        static byte[] bytesOf(JsonNode rec, String field) {
            if (rec.has(field + "_hex")) {
                String h = rec.get(field + "_hex").asText();
                byte[] b = new byte[h.length() / 2];
                for (int i = 0; i < b.length; i++) {
                    b[i] = (byte) Integer.parseInt(h.substring(2 * i, 2 * i + 2), 16);
                }
                return b;
            }
            if (rec.has(field) && !rec.get(field).isNull()) {
                return rec.get(field).asText().getBytes(StandardCharsets.UTF_8);
            }
            return null;
        }

        /** The failure the record with this value has on this attempt, if any. */
        /** The sleep of a `nack` of this delivery (scenario `nack`), or -1. */
        long nackFor(String value, int attempt) {
            for (JsonNode n : sc.path("nack")) {
                if (!n.path("value").asText().equals(value)) {
                    continue;
                }
                JsonNode at = n.path("attempts");
                boolean matches = !at.isArray();
                for (JsonNode a : at) {
                    matches |= a.asInt() == attempt;
                }
                if (matches) {
                    return n.path("sleep_ms").asLong(0);
                }
            }
            return -1;
        }

        JsonNode failureFor(String value, int attempt) {
            if (value == null) {
                return null;
            }
            JsonNode f = failures.get(value);
            if (f == null) {
                return null;
            }
            JsonNode at = f.path("attempts");
            if (at.isArray()) {
                for (JsonNode n : at) {
                    if (n.asInt() == attempt) {
                        return f;
                    }
                }
                return null;
            }
            return f;
        }

        RuntimeException error(JsonNode f, String value, int attempt) {
            String msg = f.path("message").asText("failed {value}")
                    .replace("{value}", value).replace("{attempt}", Integer.toString(attempt));
            Throwable cause = null;
            JsonNode c = f.path("cause");
            if (c.isObject()) {
                cause = Errors.make(c.path("error").asText(),
                        c.path("message").asText("cause").replace("{value}", value), null);
            }
            return Errors.make(f.path("error").asText("Transient"), msg, cause);
        }

        int nextAttempt(ConsumerRecord<?, ?> r) {
            return attempts.merge(r.partition() + "@" + r.offset(), 1, Integer::sum);
        }

        void invoked(ConsumerRecord<String, String> r, int attempt) {
            ObjectNode e = ev("invoke", r);
            e.put("attempt", attempt);
            e.put("value", r.value());
            event(e);
            if (r.value() != null) {
                valueInvocations.computeIfAbsent(r.value(), k -> new AtomicInteger()).incrementAndGet();
            }
            if (stopConditionReached()) {
                frozen = true;
            }
        }

        void output(ConsumerRecord<String, String> r) throws Exception {
            if (!sc.hasNonNull("output_topic")) {
                return;
            }
            ProducerRecord<Object, Object> pr = new ProducerRecord<>(topic(sc.get("output_topic").asText()),
                    r.partition(), r.key() == null ? null : r.key().getBytes(StandardCharsets.UTF_8),
                    ("out:" + r.value()).getBytes(StandardCharsets.UTF_8));
            if (transactional) {
                template.send(pr);
            }
            else {
                template.send(pr).get(30, TimeUnit.SECONDS);
            }
        }

        boolean manual() {
            String m = sc.path("ack_mode").asText("BATCH");
            return m.equals("MANUAL") || m.equals("MANUAL_IMMEDIATE");
        }

        boolean skipAck(String value) {
            for (JsonNode n : sc.path("manual_ack_skip")) {
                if (n.asText().equals(value)) {
                    return true;
                }
            }
            return false;
        }

        /** The record in hand on the consumer thread (for the listener-level error handler). */
        final ThreadLocal<ConsumerRecord<String, String>> current = new ThreadLocal<>();

        /** The record listener's body (shared by the plain listener and the adapter). */
        void onRecord(ConsumerRecord<String, String> r, Acknowledgment ack) throws Exception {
            current.set(r);
            int attempt = nextAttempt(r);
            invoked(r, attempt);
            JsonNode f = failureFor(r.value(), attempt);
            if (f != null) {
                throw error(f, r.value(), attempt);
            }
            long nack = nackFor(r.value(), attempt);
            if (ack != null && manual() && nack >= 0) {
                ack.nack(Duration.ofMillis(nack));
                return;
            }
            output(r);
            if (ack != null && manual() && !skipAck(r.value())) {
                ack.acknowledge();
            }
        }

        /** The batch in hand on the consumer thread (for the batch listener-level error handler). */
        final ThreadLocal<List<ConsumerRecord<String, String>>> currentBatch = new ThreadLocal<>();

        void onBatch(List<ConsumerRecord<String, String>> records, Acknowledgment ack) throws Exception {
            currentBatch.set(records);
            ObjectNode b = ev("batch");
            b.put("size", records.size());
            event(b);
            List<Integer> at = new ArrayList<>();
            for (ConsumerRecord<String, String> r : records) {
                int attempt = nextAttempt(r);
                at.add(attempt);
                invoked(r, attempt);
            }
            // The records a whole-batch failure fails with (after the others are processed).
            for (int i = 0; i < records.size(); i++) {
                ConsumerRecord<String, String> r = records.get(i);
                if (r.value() == null) {
                    DeserializationException de = SerializationUtils.getExceptionFromHeader(r,
                            SerializationUtils.VALUE_DESERIALIZER_EXCEPTION_HEADER, null);
                    if (de == null) {
                        de = SerializationUtils.getExceptionFromHeader(r,
                                SerializationUtils.KEY_DESERIALIZER_EXCEPTION_HEADER, null);
                    }
                    if (de != null) {
                        throw new BatchListenerFailedException("deserialization failed", de, r);
                    }
                }
                JsonNode f = failureFor(r.value(), at.get(i));
                if (f != null) {
                    RuntimeException cause = error(f, r.value(), at.get(i));
                    switch (f.path("batch").asText("index")) {
                        case "index":
                            throw new BatchListenerFailedException("batch failed", cause, i);
                        case "record":
                            throw new BatchListenerFailedException("batch failed", cause, r);
                        case "nested":
                            throw new Errors.Wrapper("batch wrapper",
                                    new BatchListenerFailedException("batch failed", cause, r));
                        default:
                            // a whole-batch failure: nothing of this batch counts as processed
                            throw cause;
                    }
                }
                output(r);
            }
            if (ack != null && manual()) {
                ack.acknowledge();
            }
        }

        BackOff backOff(JsonNode b) {
            if (b == null || b.isMissingNode() || b.isNull()) {
                return new FixedBackOff(0, 9);
            }
            switch (b.path("kind").asText("fixed")) {
                case "fixed": {
                    long max = b.hasNonNull("max_retries") ? b.get("max_retries").asLong()
                            : FixedBackOff.UNLIMITED_ATTEMPTS;
                    return new FixedBackOff(b.path("interval_ms").asLong(0), max);
                }
                case "exponential": {
                    ExponentialBackOff e;
                    if (b.hasNonNull("max_retries")) {
                        e = new org.springframework.kafka.support.ExponentialBackOffWithMaxRetries(
                                b.get("max_retries").asInt());
                    }
                    else {
                        e = new ExponentialBackOff();
                    }
                    e.setInitialInterval(b.path("initial_ms").asLong(2000));
                    e.setMultiplier(b.path("multiplier").asDouble(1.5));
                    e.setMaxInterval(b.path("max_ms").asLong(30000));
                    return e;
                }
                default:
                    throw new IllegalArgumentException("back-off kind " + b.path("kind").asText());
            }
        }

        /** The scenario's recoverer, logged. */
        ConsumerRecordRecoverer recoverer() {
            JsonNode rc = sc.path("recoverer");
            String kind = rc.path("kind").asText("log");
            ConsumerAwareRecordRecoverer inner;
            switch (kind) {
                case "log":
                    inner = (r, c, ex) -> {
                    };
                    break;
                case "dlt":
                case "failing":
                case "republish":
                    inner = dlpr(rc);
                    break;
                default:
                    throw new IllegalArgumentException("recoverer kind " + kind);
            }
            int failFirst = "failing".equals(kind) ? rc.path("fail_first").asInt(Integer.MAX_VALUE) : 0;
            // Consumer-aware, so that the DeadLetterPublishingRecoverer gets the consumer (it
            // verifies the destination partition with it).
            return (ConsumerAwareRecordRecoverer) (r, consumer, ex) -> {
                int n = recovererCalls.incrementAndGet();
                ObjectNode e = ev("recoverer", r);
                e.put("error", kind(ex));
                event(e);
                if (stopConditionReached()) {
                    frozen = true;
                }
                if (n <= failFirst) {
                    throw new Errors.RecovererDown("recoverer down #" + n);
                }
                inner.accept(r, consumer, ex);
            };
        }

        DeadLetterPublishingRecoverer dlpr(JsonNode rc) {
            String naming = rc.path("naming").asText("-dlt");
            JsonNode routes = rc.path("resolver");
            boolean republish = "republish".equals(rc.path("kind").asText());
            int maxRepublish = rc.path("max").asInt(1);
            DeadLetterPublishingRecoverer d = new DeadLetterPublishingRecoverer(template, (r, ex) -> {
                if (republish && republishCount(r) < maxRepublish) {
                    return new TopicPartition(r.topic(), r.partition());
                }
                if (routes.isObject()) {
                    JsonNode route = routes.get(kind(ex).replaceAll("\\(.*", ""));
                    if (route == null) {
                        route = routes.get("*");
                    }
                    if (route == null || route.isNull()) {
                        return null;
                    }
                    return new TopicPartition(topic(route.path("topic").asText()),
                            route.has("partition") ? route.get("partition").asInt() : r.partition());
                }
                return new TopicPartition(r.topic() + (".DLT".equals(naming) ? ".DLT" : "-dlt"), r.partition());
            });
            if (rc.path("missing_destination").asText("skip").equals("fail")) {
                d.setThrowIfNoDestinationReturned(true);
            }
            if (republish) {
                d.addHeadersFunction((r, ex) -> {
                    int c = republishCount(r);
                    if (c >= maxRepublish) {
                        return new RecordHeaders();
                    }
                    RecordHeaders h = new RecordHeaders();
                    h.add(new DeadLetterPublishingRecoverer.SingleRecordHeader(REPUBLISH_COUNT,
                            java.nio.ByteBuffer.allocate(4).putInt(c + 1).array()));
                    return h;
                });
            }
            return d;
        }

        static int republishCount(ConsumerRecord<?, ?> r) {
            Header h = r.headers().lastHeader(REPUBLISH_COUNT);
            if (h == null || h.value() == null || h.value().length != 4) {
                return 0;
            }
            return java.nio.ByteBuffer.wrap(h.value()).getInt();
        }

        RetryListener retryListener() {
            return new RetryListener() {
                @Override
                public void failedDelivery(ConsumerRecord<?, ?> r, Exception ex, int attempt) {
                    ObjectNode e = ev("failed", r);
                    e.put("attempt", attempt);
                    e.put("error", kind(ex));
                    e.put("message", harnessMessage(ex));
                    event(e);
                }

                @Override
                public void recovered(ConsumerRecord<?, ?> r, Exception ex) {
                    event(ev("recovered", r));
                }

                @Override
                public void recoveryFailed(ConsumerRecord<?, ?> r, Exception orig, Exception failure) {
                    ObjectNode e = ev("recovery_failed", r);
                    e.put("failure", kind(failure));
                    event(e);
                }

                @Override
                public void failedDelivery(ConsumerRecords<?, ?> records, Exception ex, int attempt) {
                    ObjectNode e = ev("failed_batch");
                    e.set("records", coords(records));
                    e.put("attempt", attempt);
                    e.put("error", kind(ex));
                    event(e);
                }

                @Override
                public void recovered(ConsumerRecords<?, ?> records, Exception ex) {
                    ObjectNode e = ev("recovered_batch");
                    e.set("records", coords(records));
                    event(e);
                }

                @Override
                public void recoveryFailed(ConsumerRecords<?, ?> records, Exception orig, Exception failure) {
                    ObjectNode e = ev("recovery_failed_batch");
                    e.set("records", coords(records));
                    e.put("failure", kind(failure));
                    event(e);
                }
            };
        }

        ArrayNode coords(ConsumerRecords<?, ?> records) {
            ArrayNode a = JSON.createArrayNode();
            for (ConsumerRecord<?, ?> r : records) {
                ArrayNode c = JSON.createArrayNode();
                c.add(r.partition());
                c.add(r.offset());
                a.add(c);
            }
            return a;
        }

        void classify(FailedRecordProcessor p) {
            List<Class<? extends Exception>> nr = new ArrayList<>();
            for (JsonNode n : sc.path("not_retryable")) {
                @SuppressWarnings("unchecked")
                Class<? extends Exception> c = (Class<? extends Exception>) Errors.classOf(n.asText());
                nr.add(c);
            }
            if (!nr.isEmpty()) {
                @SuppressWarnings("unchecked")
                Class<? extends Exception>[] arr = nr.toArray(new Class[0]);
                p.addNotRetryableExceptions(arr);
            }
            JsonNode per = sc.path("backoff_per_error");
            if (per.isObject()) {
                Map<String, BackOff> map = new HashMap<>();
                per.fields().forEachRemaining(en -> map.put(en.getKey(), backOff(en.getValue())));
                p.setBackOffFunction((r, ex) -> map.get(kind(ex).replaceAll("\\(.*", "")));
            }
            p.setRetryListeners(retryListener());
        }

        Map<String, Object> producerProps() {
            Map<String, Object> p = new HashMap<>();
            p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, Errors.BytesOrStringSerializer.class);
            p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, Errors.BytesOrStringSerializer.class);
            p.put(ProducerConfig.LINGER_MS_CONFIG, 0);
            return p;
        }

        void createTopics() throws Exception {
            try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
                List<NewTopic> topics = new ArrayList<>();
                sc.path("topics").fields().forEachRemaining(en ->
                        topics.add(new NewTopic(topic(en.getKey()), en.getValue().asInt(), (short) 1)));
                admin.createTopics(topics).all().get(60, TimeUnit.SECONDS);
            }
        }

        /** Offsets committed for the group before the container starts ("initial_offsets"). */
        void commitInitialOffsets() throws Exception {
            JsonNode initial = sc.path("initial_offsets");
            if (!initial.isObject()) {
                return;
            }
            Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
            initial.fields().forEachRemaining(en -> offsets.put(
                    new TopicPartition(input, Integer.parseInt(en.getKey())),
                    new OffsetAndMetadata(en.getValue().asLong())));
            try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
                admin.alterConsumerGroupOffsets(group, offsets).all().get(60, TimeUnit.SECONDS);
            }
        }

        void produceInput() throws Exception {
            try (KafkaProducer<Object, Object> p = new KafkaProducer<>(producerProps())) {
                int i = 0;
                List<Future<?>> sent = new ArrayList<>();
                for (JsonNode r : sc.path("records")) {
                    RecordHeaders h = new RecordHeaders();
                    JsonNode hs = r.path("headers");
                    if (hs.isObject()) {
                        hs.fields().forEachRemaining(en -> h.add(new RecordHeader(en.getKey(),
                                en.getValue().asText().getBytes(StandardCharsets.UTF_8))));
                    }
                    sent.add(p.send(new ProducerRecord<>(input, r.path("p").asInt(0), BASE_TIMESTAMP + i,
                            bytesOf(r, "key"), bytesOf(r, "value"), h)));
                    i++;
                    // one partition's records in order: wait for each (a few records per scenario)
                    sent.get(sent.size() - 1).get(30, TimeUnit.SECONDS);
                }
            }
        }

        KafkaMessageListenerContainer<String, String> container() throws Exception {
            Map<String, Object> c = new HashMap<>();
            c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            c.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, sc.path("auto_offset_reset").asText("earliest"));
            c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
            c.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, sc.path("max_poll_records").asInt(500));
            c.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 100);
            if (transactional) {
                c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
            }
            c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ErrorHandlingDeserializer.class);
            c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ErrorHandlingDeserializer.class);
            c.put(ErrorHandlingDeserializer.KEY_DESERIALIZER_CLASS, Errors.StrictUtf8Deserializer.class);
            c.put(ErrorHandlingDeserializer.VALUE_DESERIALIZER_CLASS, Errors.StrictUtf8Deserializer.class);
            DefaultKafkaConsumerFactory<String, String> cf = new DefaultKafkaConsumerFactory<>(c);

            DefaultKafkaProducerFactory<Object, Object> pf = new DefaultKafkaProducerFactory<>(producerProps());
            if (transactional) {
                pf.setTransactionIdPrefix(prefix + "tx-");
            }
            template = new KafkaTemplate<>(pf);

            ContainerProperties props = new ContainerProperties(input);
            props.setGroupId(group);
            props.setPollTimeout(200);
            String ack = sc.path("ack_mode").asText("BATCH");
            props.setAckMode(ContainerProperties.AckMode.valueOf(ack));
            if (sc.has("ack_count")) {
                props.setAckCount(sc.get("ack_count").asInt());
            }
            if (sc.has("ack_time_ms")) {
                props.setAckTime(sc.get("ack_time_ms").asLong());
            }
            if (transactional) {
                props.setKafkaAwareTransactionManager(new KafkaTransactionManager<>(pf));
                props.setBatchRecoverAfterRollback(true);
            }
            String leh = sc.path("listener_error_handler").asText("");
            if (leh.equals("value")) {
                props.setDeliveryAttemptHeader(true);
            }
            String batchLeh = sc.path("batch_listener_error_handler").asText("");
            if (batch && !batchLeh.isEmpty()) {
                props.setMessageListener(batchAdapter(batchLeh));
            }
            else if (batch) {
                props.setMessageListener((BatchAcknowledgingMessageListener<String, String>) (recs, a) -> {
                    try {
                        onBatch(recs, a);
                    }
                    catch (RuntimeException e) {
                        throw e;
                    }
                    catch (Exception e) {
                        throw new IllegalStateException(e);
                    }
                });
            }
            else if (!leh.isEmpty()) {
                props.setMessageListener(adapter(leh));
            }
            else {
                props.setMessageListener((AcknowledgingMessageListener<String, String>) (r, a) -> {
                    try {
                        onRecord(r, a);
                    }
                    catch (RuntimeException e) {
                        throw e;
                    }
                    catch (Exception e) {
                        throw new IllegalStateException(e);
                    }
                });
            }
            KafkaMessageListenerContainer<String, String> container = new KafkaMessageListenerContainer<>(cf, props);
            BackOff bo = backOff(sc.path("backoff"));
            if (transactional) {
                ConsumerRecordRecoverer rec = recoverer();
                DefaultAfterRollbackProcessor<String, String> arp =
                        new DefaultAfterRollbackProcessor<>(rec, bo, template, true);
                classify(arp);
                container.setAfterRollbackProcessor(arp);
            }
            else {
                DefaultErrorHandler deh = new DefaultErrorHandler(recoverer(), bo);
                classify(deh);
                if (sc.has("seek_after_error")) {
                    deh.setSeekAfterError(sc.get("seek_after_error").asBoolean());
                }
                if (sc.has("ack_after_handle")) {
                    deh.setAckAfterHandle(sc.get("ack_after_handle").asBoolean());
                }
                if (sc.has("commit_recovered")) {
                    deh.setCommitRecovered(sc.get("commit_recovered").asBoolean());
                }
                JsonNode delegates = sc.path("delegates");
                String kindOfHandler = sc.path("error_handler").asText("default");
                if (kindOfHandler.equals("logging")) {
                    container.setCommonErrorHandler(new CommonLoggingErrorHandler());
                }
                else if (kindOfHandler.equals("stopping")) {
                    container.setCommonErrorHandler(new CommonContainerStoppingErrorHandler());
                }
                else if (kindOfHandler.equals("halt")) {
                    container.setCommonErrorHandler(haltingHandler());
                }
                else if (kindOfHandler.equals("other-seek")) {
                    container.setCommonErrorHandler(otherSeekHandler(bo));
                }
                else if (delegates.isObject()) {
                    CommonDelegatingErrorHandler d = new CommonDelegatingErrorHandler(deh);
                    d.setCauseChainTraversing(true);
                    ConsumerRecordRecoverer rec = recoverer();
                    delegates.fields().forEachRemaining(en -> {
                        DefaultErrorHandler h = new DefaultErrorHandler(rec, backOff(en.getValue().path("backoff")));
                        h.setRetryListeners(retryListener());
                        @SuppressWarnings("unchecked")
                        Class<? extends Throwable> type = (Class<? extends Throwable>) Errors.classOf(en.getKey());
                        d.addDelegate(type, h);
                    });
                    container.setCommonErrorHandler(d);
                }
                else {
                    container.setCommonErrorHandler(deh);
                }
            }
            return container;
        }

        /**
         * "other-seek": the DefaultErrorHandler with a custom handleOtherException that logs an
         * "other" event per partition of an OffsetOutOfRangeException and seeks those partitions
         * to offset 0 (the scenarios' topics are new: their first record).
         */
        CommonErrorHandler otherSeekHandler(BackOff bo) {
            DefaultErrorHandler h = new DefaultErrorHandler(recoverer(), bo) {
                @Override
                public void handleOtherException(Exception thrown, Consumer<?, ?> consumer,
                        MessageListenerContainer container, boolean batchListener) {
                    if (thrown instanceof OffsetOutOfRangeException oor) {
                        List<TopicPartition> tps = new ArrayList<>(oor.partitions());
                        tps.sort((a, b) -> Integer.compare(a.partition(), b.partition()));
                        for (TopicPartition tp : tps) {
                            ObjectNode e = ev("other");
                            e.put("topic", norm(tp.topic()));
                            e.put("p", tp.partition());
                            e.put("error", "OffsetOutOfRange");
                            event(e);
                            consumer.seek(tp, 0);
                        }
                    }
                    else {
                        ObjectNode e = ev("other");
                        String name = thrown.getClass().getSimpleName();
                        e.put("error", name.endsWith("Exception")
                                ? name.substring(0, name.length() - "Exception".length()) : name);
                        event(e);
                    }
                }
            };
            classify(h);
            return h;
        }

        /**
         * "halt": a handler of one's own that halts the failed record's partition: it seeks
         * every partition of the remaining records back to its first one (the container drops
         * the rest of the poll), pauses the failed record's partition, and does not acknowledge
         * the record (isAckAfterHandle false).
         */
        CommonErrorHandler haltingHandler() {
            return new CommonErrorHandler() {
                @Override
                public void handleRemaining(Exception thrown, List<ConsumerRecord<?, ?>> records,
                        Consumer<?, ?> consumer, MessageListenerContainer container) {
                    ConsumerRecord<?, ?> failed = records.get(0);
                    ObjectNode e = ev("halt", failed);
                    e.put("error", kind(thrown));
                    event(e);
                    Map<TopicPartition, Long> first = new java.util.LinkedHashMap<>();
                    for (ConsumerRecord<?, ?> r : records) {
                        first.putIfAbsent(new TopicPartition(r.topic(), r.partition()), r.offset());
                    }
                    first.forEach(consumer::seek);
                    container.pausePartition(new TopicPartition(failed.topic(), failed.partition()));
                }

                @Override
                public boolean isAckAfterHandle() {
                    return false;
                }

                @Override
                public boolean seeksAfterHandling() {
                    return true;
                }
            };
        }

        /** The listener adapter with a listener-level (consumer-aware) error handler. */
        Object adapter(String kind) throws Exception {
            Method m = ListenerBean.class.getMethod("listen", ConsumerRecord.class);
            ListenerBean bean = new ListenerBean(this);
            ConsumerAwareListenerErrorHandler handler = (msg, ex, consumer) -> {
                // The adapter hands a bare message when the method takes the ConsumerRecord
                // itself (no conversion): the record comes from the listener's thread.
                ConsumerRecord<String, String> r = current.get();
                String topic = r.topic();
                int partition = r.partition();
                long offset = r.offset();
                ObjectNode e = ev("listener_error_handler");
                e.put("topic", norm(topic));
                e.put("p", partition);
                e.put("o", offset);
                e.put("error", kind(ex));
                // The delivery attempt (the container's kafka_deliveryAttempt header).
                Header h = r.headers().lastHeader("kafka_deliveryAttempt");
                int attempt = h == null ? 0 : java.nio.ByteBuffer.wrap(h.value()).getInt();
                if (kind.equals("value")) {
                    e.put("attempt", attempt);
                }
                event(e);
                switch (kind) {
                    case "value": {
                        // From `leh_handle_from_attempt` on, the handler returns a value.
                        if (attempt >= sc.path("leh_handle_from_attempt").asInt(1)) {
                            ObjectNode res = ev("listener_result", r);
                            res.put("value", "FAILED:" + r.value());
                            event(res);
                            return "FAILED:" + r.value();
                        }
                        throw ex;
                    }
                    case "seek":
                        consumer.seek(new TopicPartition(topic, partition), offset);
                        return null;
                    case "swallow":
                        return null;
                    default:
                        throw ex;
                }
            };
            RecordMessagingMessageListenerAdapter<String, String> a =
                    new RecordMessagingMessageListenerAdapter<>(bean, m, handler);
            DefaultMessageHandlerMethodFactory f = new DefaultMessageHandlerMethodFactory();
            f.afterPropertiesSet();
            a.setHandlerMethod(new HandlerAdapter(f.createInvocableHandlerMethod(bean, m)));
            return a;
        }

        /**
         * The batch listener adapter with a listener-level (consumer-aware) error handler:
         * "name" names the batch's first record that has a failure in the scenario
         * (BatchListenerFailedException at its index), "swallow" handles the failure, anything
         * else rethrows.
         */
        Object batchAdapter(String kind) throws Exception {
            Method m = BatchListenerBean.class.getMethod("listen", List.class);
            BatchListenerBean bean = new BatchListenerBean(this);
            ConsumerAwareListenerErrorHandler handler = (msg, ex, consumer) -> {
                List<ConsumerRecord<String, String>> recs = currentBatch.get();
                ObjectNode e = ev("listener_error_handler_batch");
                ArrayNode a = JSON.createArrayNode();
                int named = -1;
                for (int i = 0; i < recs.size(); i++) {
                    ConsumerRecord<String, String> r = recs.get(i);
                    ArrayNode c = JSON.createArrayNode();
                    c.add(r.partition());
                    c.add(r.offset());
                    a.add(c);
                    if (named < 0 && r.value() != null && failures.get(r.value()) != null) {
                        named = i;
                    }
                }
                e.set("records", a);
                e.put("error", kind(ex));
                event(e);
                switch (kind) {
                    case "swallow":
                        return null;
                    case "name":
                        if (named >= 0) {
                            Throwable cause = ex.getCause() != null ? ex.getCause() : ex;
                            throw new BatchListenerFailedException("named by the listener error handler",
                                    cause, named);
                        }
                        throw ex;
                    default:
                        throw ex;
                }
            };
            BatchMessagingMessageListenerAdapter<String, String> a =
                    new BatchMessagingMessageListenerAdapter<>(bean, m, handler);
            DefaultMessageHandlerMethodFactory f = new DefaultMessageHandlerMethodFactory();
            f.afterPropertiesSet();
            a.setHandlerMethod(new HandlerAdapter(f.createInvocableHandlerMethod(bean, m)));
            return a;
        }

        /** The bean the batch adapter invokes. */
        public static final class BatchListenerBean {
            private final ScenarioRun run;

            BatchListenerBean(ScenarioRun run) {
                this.run = run;
            }

            public void listen(List<ConsumerRecord<String, String>> records) throws Exception {
                run.onBatch(records, null);
            }
        }

        /** The bean the adapter invokes. */
        public static final class ListenerBean {
            private final ScenarioRun run;

            ListenerBean(ScenarioRun run) {
                this.run = run;
            }

            public void listen(ConsumerRecord<String, String> r) throws Exception {
                run.onRecord(r, null);
            }
        }

        Map<TopicPartition, Long> endOffsets(KafkaConsumer<byte[], byte[]> c, Collection<TopicPartition> tps) {
            return c.endOffsets(tps, Duration.ofSeconds(10));
        }

        List<TopicPartition> partitions(String logical) {
            List<TopicPartition> tps = new ArrayList<>();
            int n = sc.path("topics").path(logical).asInt(0);
            for (int p = 0; p < n; p++) {
                tps.add(new TopicPartition(topic(logical), p));
            }
            return tps;
        }

        KafkaConsumer<byte[], byte[]> reader(boolean readCommitted) {
            Map<String, Object> c = new HashMap<>();
            c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
            c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
            c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
            c.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, readCommitted ? "read_committed" : "read_uncommitted");
            return new KafkaConsumer<>(c);
        }

        boolean stopConditionReached() {
            JsonNode st = sc.path("stop");
            if (st.has("recoverer_calls") && recovererCalls.get() >= st.get("recoverer_calls").asInt()) {
                return true;
            }
            if (st.has("invocations")) {
                JsonNode inv = st.get("invocations");
                AtomicInteger n = valueInvocations.get(inv.path("value").asText());
                return n != null && n.get() >= inv.path("count").asInt();
            }
            return false;
        }

        /** A share scenario ({@code "container": "share"}): Spring's share listener container. */
        boolean share() {
            return "share".equals(sc.path("container").asText(""));
        }

        void shareAck(ConsumerRecord<?, ?> r, int deliveryCount, AcknowledgeType type) {
            ObjectNode e = ev("share_ack", r);
            e.put("attempt", deliveryCount);
            e.put("ack", type.toString().toLowerCase());
            event(e);
        }

        /**
         * Spring's {@code ShareKafkaMessageListenerContainer} in {@code EXPLICIT} mode: a record
         * the listener returns from is accepted by the container; a failure goes to its
         * {@code ShareConsumerRecordRecoverer}, whose answer is the acknowledgement. Spring has
         * no back-off, classifier or dead-letter step for share containers, so the recoverer
         * here is the user-written policy rekafka's {@code ShareContainer} has built in (with
         * no recoverer of its own): reject a not-retryable error (cause chain, as Spring's
         * classifiers look), release while the delivery count is below the group's
         * {@code share.delivery.count.limit}, reject on the last delivery.
         */
        List<String> runShare() throws Exception {
            createTopics();
            int limit = sc.path("share_delivery_count_limit").asInt(5);
            try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
                ConfigResource res = new ConfigResource(ConfigResource.Type.GROUP, group);
                admin.incrementalAlterConfigs(Map.of(res, List.of(
                        new AlterConfigOp(new ConfigEntry("share.auto.offset.reset", "earliest"),
                                AlterConfigOp.OpType.SET),
                        new AlterConfigOp(new ConfigEntry("share.delivery.count.limit", String.valueOf(limit)),
                                AlterConfigOp.OpType.SET))))
                        .all().get(30, TimeUnit.SECONDS);
            }
            produceInput();
            Set<String> notRetryable = new HashSet<>();
            for (JsonNode n : sc.path("not_retryable")) {
                notRetryable.add(n.asText());
            }
            Map<String, Object> props = new HashMap<>();
            props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
            props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
            props.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 100);
            DefaultShareConsumerFactory<String, String> cf = new DefaultShareConsumerFactory<>(props);
            ContainerProperties cp = new ContainerProperties(input);
            cp.setGroupId(group);
            cp.setShareAckMode(ContainerProperties.ShareAckMode.EXPLICIT);
            cp.setMessageListener((MessageListener<String, String>) r -> {
                int dc = r.deliveryCount().map(Short::intValue).orElse(-1);
                ObjectNode e = ev("share_invoke", r);
                e.put("attempt", dc);
                e.put("value", r.value());
                event(e);
                JsonNode f = failureFor(r.value(), dc);
                if (f != null) {
                    throw error(f, r.value(), dc);
                }
                shareAck(r, dc, AcknowledgeType.ACCEPT);
            });
            ShareKafkaMessageListenerContainer<String, String> container =
                    new ShareKafkaMessageListenerContainer<>(cf, cp);
            container.setShareConsumerRecordRecoverer((r, ex) -> {
                int dc = r.deliveryCount().map(Short::intValue).orElse(-1);
                boolean fatal = false;
                Set<Throwable> seen = new HashSet<>();
                for (Throwable c = ex; c != null && seen.add(c); c = c.getCause()) {
                    if (notRetryable.contains(c.getClass().getSimpleName())) {
                        fatal = true;
                    }
                }
                AcknowledgeType t = fatal || dc >= limit ? AcknowledgeType.REJECT : AcknowledgeType.RELEASE;
                shareAck(r, dc, t);
                return t;
            });
            long deadline = System.currentTimeMillis() + sc.path("timeout_ms").asLong(60_000);
            long quiet = sc.path("quiet_ms").asLong(3_000);
            container.start();
            try {
                while (true) {
                    Thread.sleep(100);
                    long now = System.currentTimeMillis();
                    if (now > deadline) {
                        event(ev("timeout"));
                        break;
                    }
                    // nothing happens before the member's first assignment: not quiet yet
                    if (logSize() > 0 && now - lastEvent.get() >= quiet) {
                        break;
                    }
                }
            }
            finally {
                container.stop();
            }
            return log;
        }

        List<String> run() throws Exception {
            if (share()) {
                return runShare();
            }
            if (sc.has("retry_topics")) {
                return RetryTopicScenario.run(this);
            }
            createTopics();
            produceInput();
            commitInitialOffsets();
            KafkaMessageListenerContainer<String, String> container = container();
            long deadline = System.currentTimeMillis() + sc.path("timeout_ms").asLong(60_000);
            long quiet = sc.path("quiet_ms").asLong(1_000);
            boolean expectEnd = sc.path("expect_committed_end").asBoolean(true);
            List<TopicPartition> inTps = partitions(sc.path("input_topic").asText("in"));
            container.start();
            try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap));
                 KafkaConsumer<byte[], byte[]> probe = reader(false)) {
                while (true) {
                    Thread.sleep(100);
                    long now = System.currentTimeMillis();
                    // a safety cap (a record retried forever): stop there
                    if (stopConditionReached()) {
                        break;
                    }
                    if (now > deadline) {
                        event(ev("timeout"));
                        break;
                    }
                    boolean idle = now - lastEvent.get() >= quiet;
                    // nothing happens before the group's first assignment: not quiet yet
                    if (!idle || logSize() == 0) {
                        continue;
                    }
                    if (!expectEnd) {
                        if (now - lastEvent.get() >= sc.path("quiet_ms").asLong(3_000)) {
                            break;
                        }
                        continue;
                    }
                    Map<TopicPartition, Long> end;
                    Map<TopicPartition, OffsetAndMetadata> committed;
                    try {
                        end = endOffsets(probe, inTps);
                        committed = admin.listConsumerGroupOffsets(group)
                                .partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
                    }
                    catch (Exception e) {
                        // a broker being away: look again
                        continue;
                    }
                    boolean done = true;
                    for (TopicPartition tp : inTps) {
                        OffsetAndMetadata om = committed.get(tp);
                        long c = om == null ? 0 : om.offset();
                        if (c != end.get(tp)) {
                            done = false;
                        }
                    }
                    if (done) {
                        break;
                    }
                }
                container.stop();
                frozen = false;
                // the final observations
                Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group)
                        .partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
                for (TopicPartition tp : inTps) {
                    OffsetAndMetadata om = committed.get(tp);
                    ObjectNode e = ev("committed");
                    e.put("topic", norm(tp.topic()));
                    e.put("p", tp.partition());
                    if (om == null) {
                        e.putNull("offset");
                        e.put("metadata", "");
                    }
                    else {
                        e.put("offset", om.offset());
                        e.put("metadata", om.metadata() == null ? "" : om.metadata());
                    }
                    event(e);
                }
            }
            for (JsonNode t : sc.path("dlt_topics")) {
                readTopic(t.asText(), "dead_letter", transactional);
            }
            if (sc.hasNonNull("output_topic")) {
                readTopic(sc.get("output_topic").asText(), "output", true);
            }
            return log;
        }

        void readTopic(String logical, String type, boolean readCommitted) {
            readTopic(logical, type, readCommitted, sc.path("topics").path(logical).asInt(0));
        }

        void readTopic(String logical, String type, boolean readCommitted, int partitionCount) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitionCount; p++) {
                tps.add(new TopicPartition(topic(logical), p));
            }
            try (KafkaConsumer<byte[], byte[]> c = reader(readCommitted)) {
                c.assign(tps);
                c.seekToBeginning(tps);
                Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(10));
                long deadline = System.currentTimeMillis() + 15_000;
                List<ConsumerRecord<byte[], byte[]>> all = new ArrayList<>();
                while (System.currentTimeMillis() < deadline) {
                    boolean atEnd = true;
                    for (TopicPartition tp : tps) {
                        if (c.position(tp, Duration.ofSeconds(10)) < end.get(tp)) {
                            atEnd = false;
                        }
                    }
                    if (atEnd) {
                        break;
                    }
                    for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                        all.add(r);
                    }
                }
                all.sort((x, y) -> x.partition() != y.partition() ? Integer.compare(x.partition(), y.partition())
                        : Long.compare(x.offset(), y.offset()));
                for (ConsumerRecord<byte[], byte[]> r : all) {
                    ObjectNode e = ev(type);
                    e.put("topic", norm(r.topic()));
                    e.put("p", r.partition());
                    putBytes(e, "key", r.key());
                    putBytes(e, "value", r.value());
                    ArrayNode hs = JSON.createArrayNode();
                    for (Header h : r.headers()) {
                        ObjectNode ho = JSON.createObjectNode();
                        ho.put("name", h.key());
                        putBytes(ho, "value", h.value());
                        hs.add(ho);
                    }
                    e.set("headers", hs);
                    event(e);
                }
            }
        }
    }
}
