package rekafka.spring;

import java.nio.ByteBuffer;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.springframework.context.annotation.AnnotationConfigApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.core.env.MapPropertySource;
import org.springframework.kafka.annotation.EnableKafkaRetryTopic;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.kafka.config.ConcurrentKafkaListenerContainerFactory;
import org.springframework.kafka.core.ConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaAdmin;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.retrytopic.RetryTopicConfiguration;
import org.springframework.kafka.retrytopic.RetryTopicConfigurationBuilder;
import org.springframework.kafka.retrytopic.RetryTopicHeaders;
import org.springframework.scheduling.TaskScheduler;
import org.springframework.scheduling.concurrent.ThreadPoolTaskScheduler;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * A "retry_topics" scenario (protocol-tests/spring/README.md) through Spring's own retry-topic
 * machinery: an application context (no Spring Boot) with {@code @EnableKafkaRetryTopic}, a
 * {@code RetryTopicConfiguration} bean from {@code RetryTopicConfigurationBuilder} (attempts,
 * back-off, not-retryable errors, topic creation through {@code KafkaAdmin}), and a
 * {@code @KafkaListener} on the input topic with a DLT handler method. Spring's
 * {@code RetryTopicConfigurer} makes one container per topic (main, retry topics, DLT; group
 * {@code G} plus the topic's suffix), waiting for each record's due time with its
 * {@code KafkaBackoffAwareMessageListenerAdapter} and partition-pausing back-off manager.
 */
final class RetryTopicScenario {

    private RetryTopicScenario() {
    }

    /** The attempt a record is on: its retry_topic-attempts header (4-byte or 1-byte), else 1. */
    static int attemptOf(ConsumerRecord<?, ?> r) {
        Header h = r.headers().lastHeader(RetryTopicHeaders.DEFAULT_HEADER_ATTEMPTS);
        if (h == null || h.value() == null) {
            return 1;
        }
        byte[] b = h.value();
        if (b.length == 4) {
            return ByteBuffer.wrap(b).getInt();
        }
        if (b.length == 1) {
            return b[0];
        }
        return 1;
    }

    /** The listener: the main and retry topics' records, and the DLT handler. */
    public static final class Listener {
        private final Runner.ScenarioRun run;

        Listener(Runner.ScenarioRun run) {
            this.run = run;
        }

        void invoked(ConsumerRecord<String, String> r, int attempt) {
            ObjectNode e = run.ev("invoke", r);
            e.put("attempt", attempt);
            e.put("value", r.value());
            run.event(e);
        }

        @KafkaListener(id = "${rekafka.listener-id}", topics = "${rekafka.main}", groupId = "${rekafka.group}")
        public void listen(ConsumerRecord<String, String> r) {
            int attempt = attemptOf(r);
            invoked(r, attempt);
            JsonNode f = run.failureFor(r.value(), attempt);
            if (f != null) {
                throw run.error(f, r.value(), attempt);
            }
        }

        /** The DLT handler (RetryTopicConfigurationBuilder.dltHandlerMethod). */
        public void dlt(ConsumerRecord<String, String> r) {
            invoked(r, attemptOf(r));
        }
    }

    /** The application context's beans. */
    @Configuration(proxyBeanMethods = false)
    @EnableKafkaRetryTopic
    public static class App {

        @Bean
        public ConsumerFactory<String, String> consumerFactory(Runner.ScenarioRun run) {
            Map<String, Object> c = new HashMap<>();
            c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, run.bootstrap);
            c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
            c.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 100);
            c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
            c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class);
            return new DefaultKafkaConsumerFactory<>(c);
        }

        @Bean
        public KafkaTemplate<Object, Object> kafkaTemplate(Runner.ScenarioRun run) {
            return new KafkaTemplate<>(new DefaultKafkaProducerFactory<>(run.producerProps()));
        }

        @Bean
        public ConcurrentKafkaListenerContainerFactory<String, String> kafkaListenerContainerFactory(
                ConsumerFactory<String, String> cf) {
            ConcurrentKafkaListenerContainerFactory<String, String> f = new ConcurrentKafkaListenerContainerFactory<>();
            f.setConsumerFactory(cf);
            f.getContainerProperties().setPollTimeout(200);
            return f;
        }

        @Bean
        public KafkaAdmin kafkaAdmin(Runner.ScenarioRun run) {
            return new KafkaAdmin(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, run.bootstrap));
        }

        @Bean
        public TaskScheduler taskScheduler() {
            ThreadPoolTaskScheduler s = new ThreadPoolTaskScheduler();
            s.setPoolSize(2);
            return s;
        }

        @Bean
        public Listener rekafkaListener(Runner.ScenarioRun run) {
            return new Listener(run);
        }

        @Bean
        public RetryTopicConfiguration retryTopicConfiguration(Runner.ScenarioRun run,
                KafkaTemplate<Object, Object> template) {
            JsonNode rt = run.sc.path("retry_topics");
            RetryTopicConfigurationBuilder b = RetryTopicConfigurationBuilder.newInstance()
                    .includeTopic(run.input)
                    .maxAttempts(rt.path("max_attempts").asInt(3))
                    .dltHandlerMethod("rekafkaListener", "dlt")
                    .autoCreateTopicsWith(rt.path("partitions").asInt(1),
                            (short) rt.path("replication_factor").asInt(1));
            JsonNode bo = rt.path("backoff");
            switch (bo.path("kind").asText("fixed")) {
                case "fixed":
                    b.fixedBackOff(bo.path("interval_ms").asLong(1000));
                    break;
                case "exponential":
                    b.exponentialBackoff(bo.path("initial_ms").asLong(1000), bo.path("multiplier").asDouble(2.0),
                            bo.path("max_ms").asLong(30_000));
                    break;
                default:
                    throw new IllegalArgumentException("retry_topics back-off " + bo);
            }
            for (JsonNode n : rt.path("not_retry_on")) {
                b.notRetryOn(Errors.classOf(n.asText()));
            }
            return b.create(template);
        }
    }

    static List<String> run(Runner.ScenarioRun run) throws Exception {
        run.createTopics();
        run.produceInput();
        AnnotationConfigApplicationContext ctx = new AnnotationConfigApplicationContext();
        Map<String, Object> props = new HashMap<>();
        props.put("rekafka.main", run.input);
        props.put("rekafka.group", run.group);
        props.put("rekafka.listener-id", run.prefix + "listener");
        ctx.getEnvironment().getPropertySources().addFirst(new MapPropertySource("rekafka-scenario", props));
        ctx.registerBean(Runner.ScenarioRun.class, () -> run);
        ctx.register(App.class);
        long deadline = System.currentTimeMillis() + run.sc.path("timeout_ms").asLong(60_000);
        long quiet = run.sc.path("quiet_ms").asLong(1_000);
        // Every topic of the scenario (the input, and the retry topics and DLTs Spring made)
        // with its group: G for the input, G plus the topic's suffix for the others.
        Map<String, TopicDescription> topics;
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, run.bootstrap));
             KafkaConsumer<byte[], byte[]> probe = run.reader(false)) {
            ctx.refresh();
            try {
                while (true) {
                    Thread.sleep(100);
                    long now = System.currentTimeMillis();
                    if (now > deadline) {
                        run.event(run.ev("timeout"));
                        break;
                    }
                    if (now - run.lastEvent.get() < quiet || run.logSize() == 0) {
                        continue;
                    }
                    try {
                        if (allCommitted(run, admin, probe, describe(run, admin))) {
                            break;
                        }
                    }
                    catch (Exception e) {
                        // a broker being away: look again
                    }
                }
            }
            finally {
                // Stops every container (each commits what it handled).
                ctx.close();
            }
            topics = describe(run, admin);
            for (TopicDescription t : topics.values()) {
                ObjectNode e = run.ev("topic");
                e.put("topic", run.norm(t.name()));
                e.put("partitions", t.partitions().size());
                run.event(e);
            }
            for (TopicDescription t : topics.values()) {
                Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(groupOf(run, t.name()))
                        .partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
                for (int p = 0; p < t.partitions().size(); p++) {
                    OffsetAndMetadata om = committed.get(new TopicPartition(t.name(), p));
                    ObjectNode e = run.ev("committed");
                    e.put("topic", run.norm(t.name()));
                    e.put("p", p);
                    if (om == null) {
                        e.putNull("offset");
                        e.put("metadata", "");
                    }
                    else {
                        e.put("offset", om.offset());
                        e.put("metadata", om.metadata() == null ? "" : om.metadata());
                    }
                    run.event(e);
                }
            }
        }
        for (TopicDescription t : topics.values()) {
            if (t.name().endsWith("-dlt")) {
                run.readTopic(run.norm(t.name()), "dead_letter", false, t.partitions().size());
            }
        }
        return run.log;
    }

    /** The group consuming a topic of the scenario: G, or G plus the topic's suffix. */
    static String groupOf(Runner.ScenarioRun run, String topic) {
        return topic.equals(run.input) ? run.group : run.group + topic.substring(run.input.length());
    }

    /** The scenario's topics by name (the input, and every topic named after it). */
    static Map<String, TopicDescription> describe(Runner.ScenarioRun run, Admin admin) throws Exception {
        List<String> names = new ArrayList<>();
        for (String n : admin.listTopics().names().get(10, TimeUnit.SECONDS)) {
            if (n.startsWith(run.input)) {
                names.add(n);
            }
        }
        return new TreeMap<>(admin.describeTopics(names).allTopicNames().get(10, TimeUnit.SECONDS));
    }

    /** Whether every topic's group has committed every partition to its end. */
    static boolean allCommitted(Runner.ScenarioRun run, Admin admin, KafkaConsumer<byte[], byte[]> probe,
            Map<String, TopicDescription> topics) throws Exception {
        for (TopicDescription t : topics.values()) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < t.partitions().size(); p++) {
                tps.add(new TopicPartition(t.name(), p));
            }
            Map<TopicPartition, Long> end = run.endOffsets(probe, tps);
            Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(groupOf(run, t.name()))
                    .partitionsToOffsetAndMetadata().get(10, TimeUnit.SECONDS);
            for (TopicPartition tp : tps) {
                OffsetAndMetadata om = committed.get(tp);
                if ((om == null ? 0 : om.offset()) != end.get(tp)) {
                    return false;
                }
            }
        }
        return true;
    }
}
