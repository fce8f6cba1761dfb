package rekafka.spring;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.listener.MessageListener;
import org.springframework.kafka.retrytopic.DeadLetterPublishingRecovererFactory;
import org.springframework.kafka.retrytopic.DefaultDestinationTopicResolver;
import org.springframework.kafka.retrytopic.DestinationTopic;
import org.springframework.kafka.retrytopic.DestinationTopicPropertiesFactory;
import org.springframework.kafka.retrytopic.DltStrategy;
import org.springframework.kafka.retrytopic.RetryTopicConstants;
import org.springframework.kafka.retrytopic.SameIntervalTopicReuseStrategy;
import org.springframework.kafka.retrytopic.TopicSuffixingStrategy;
import org.springframework.kafka.support.ExceptionMatcher;
import org.springframework.util.backoff.FixedBackOff;

/**
 * Retry-topic interoperability with rekafka (tests/retry_topics_spring.rs).
 *
 * <pre>
 * fail --bootstrap B --main T --group G --source S --count N
 *     consumes S (T itself, or one of its retry topics) in Spring's group for it (G, or G plus
 *     the topic's suffix) with a listener that always fails, and forwards each failed record with
 *     the recoverer of Spring's retry-topic support (DeadLetterPublishingRecovererFactory over a
 *     DefaultDestinationTopicResolver) for the topology T, T-retry-0 (200 ms), T-retry-1 (400 ms),
 *     T-dlt, 3 attempts. Stops once N records failed and their offsets are committed.
 *
 * topics --main T --delays D1,D2,... --suffixing index|delay --reuse single|multiple [--routes S1,S2]
 *     prints the topics Spring's DestinationTopicPropertiesFactory makes for T with these back-off
 *     values (ms, one per retry), suffixing and same-interval reuse strategies, and one
 *     exception-based DLT route per suffix S (tests/retry_topics_spring.rs compares them with
 *     rekafka's names): "topics [T, ...]", one "reusable NAME" line per reusable retry topic, and
 *     "next SOURCE ATTEMPT generic|routed DEST|none" for each topic and attempt: where Spring's
 *     DefaultDestinationTopicResolver sends a record failing with a generic error and with the
 *     routed one (IllegalArgumentException).
 * </pre>
 *
 * Spring's listener here does not wait for a record's due time (that is the job of
 * KafkaBackoffAwareMessageListenerAdapter, which needs the application context); only the
 * forwarding, the attempt count and the headers are Spring's.
 */
public final class RetryTopicInterop {

    private RetryTopicInterop() {
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 1; i + 1 < args.length; i += 2) {
            a.put(args[i], args[i + 1]);
        }
        if ("topics".equals(args.length > 0 ? args[0] : "")) {
            topics(a);
            System.exit(0);
        }
        if (!"fail".equals(args.length > 0 ? args[0] : "")) {
            System.err.println("usage: RetryTopicInterop fail --bootstrap B --main T --group G --source S --count N");
            System.exit(2);
        }
        fail(a.get("--bootstrap"), a.get("--main"), a.get("--group"), a.get("--source"),
                Integer.parseInt(a.get("--count")));
        System.exit(0);
    }

    static void topics(Map<String, String> a) {
        String main = a.get("--main");
        List<Long> delays = new ArrayList<>();
        for (String d : a.get("--delays").split(",")) {
            delays.add(Long.parseLong(d));
        }
        Map<String, Set<Class<? extends Throwable>>> routes = new LinkedHashMap<>();
        String routeList = a.getOrDefault("--routes", "");
        if (!routeList.isEmpty()) {
            for (String suffix : routeList.split(",")) {
                routes.put(suffix, Set.of(IllegalArgumentException.class));
            }
        }
        List<DestinationTopic.Properties> properties = new DestinationTopicPropertiesFactory("-retry", "-dlt",
                delays, ExceptionMatcher.defaultMatcher(), 1, null, DltStrategy.ALWAYS_RETRY_ON_ERROR,
                "index".equals(a.get("--suffixing")) ? TopicSuffixingStrategy.SUFFIX_WITH_INDEX_VALUE
                        : TopicSuffixingStrategy.SUFFIX_WITH_DELAY_VALUE,
                "multiple".equals(a.get("--reuse")) ? SameIntervalTopicReuseStrategy.MULTIPLE_TOPICS
                        : SameIntervalTopicReuseStrategy.SINGLE_TOPIC,
                RetryTopicConstants.NOT_SET, routes).createProperties();
        System.out.println("topics " + properties.stream().map(p -> main + p.suffix()).toList());
        List<DestinationTopic> destinations = new ArrayList<>();
        for (DestinationTopic.Properties p : properties) {
            DestinationTopic d = new DestinationTopic(main + p.suffix(), p);
            destinations.add(d);
            if (d.isReusableRetryTopic()) {
                System.out.println("reusable " + d.getDestinationName());
            }
        }
        // Where Spring's resolver sends a record of each topic, on each attempt, failing with a
        // generic error and with the routed one.
        DefaultDestinationTopicResolver resolver = new DefaultDestinationTopicResolver();
        resolver.addDestinationTopics("topics", destinations);
        for (DestinationTopic source : destinations) {
            for (int attempt = 1; attempt <= delays.size() + 1; attempt++) {
                for (String kind : routes.isEmpty() ? List.of("generic") : List.of("generic", "routed")) {
                    Exception e = "routed".equals(kind) ? new IllegalArgumentException("routed")
                            : new IllegalStateException("generic");
                    DestinationTopic next = resolver.resolveDestinationTopic("topics", source.getDestinationName(),
                            attempt, e, System.currentTimeMillis());
                    System.out.println("next " + source.getDestinationName() + " " + attempt + " " + kind + " "
                            + (next.isNoOpsTopic() ? "none" : next.getDestinationName()));
                }
            }
        }
    }

    static void fail(String bootstrap, String main, String group, String source, int count) throws Exception {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
        KafkaTemplate<Object, Object> template = new KafkaTemplate<>(new DefaultKafkaProducerFactory<>(p));

        // Spring's own topology for 3 attempts, delays 200 and 400 ms, suffixed by index.
        List<DestinationTopic.Properties> properties = new DestinationTopicPropertiesFactory("-retry", "-dlt",
                List.of(200L, 400L), ExceptionMatcher.defaultMatcher(), 1, template,
                DltStrategy.ALWAYS_RETRY_ON_ERROR, TopicSuffixingStrategy.SUFFIX_WITH_INDEX_VALUE,
                SameIntervalTopicReuseStrategy.MULTIPLE_TOPICS, RetryTopicConstants.NOT_SET).createProperties();
        List<DestinationTopic> destinations = new ArrayList<>();
        for (DestinationTopic.Properties prop : properties) {
            destinations.add(new DestinationTopic(main + prop.suffix(), prop));
        }
        System.out.println("topics " + destinations.stream().map(DestinationTopic::getDestinationName).toList());
        DefaultDestinationTopicResolver resolver = new DefaultDestinationTopicResolver();
        String listenerId = "retry-interop";
        resolver.addDestinationTopics(listenerId, destinations);
        DeadLetterPublishingRecoverer recoverer = new DeadLetterPublishingRecovererFactory(resolver).create(listenerId);

        Map<String, Object> c = new HashMap<>();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        ContainerProperties props = new ContainerProperties(source);
        props.setGroupId(group + source.substring(main.length()));
        props.setPollTimeout(200);
        AtomicInteger failed = new AtomicInteger();
        props.setMessageListener((MessageListener<byte[], byte[]>) r -> {
            failed.incrementAndGet();
            throw new IllegalStateException("spring failed " + r.topic() + "@" + r.offset());
        });
        KafkaMessageListenerContainer<byte[], byte[]> container =
                new KafkaMessageListenerContainer<>(new DefaultKafkaConsumerFactory<>(c), props);
        container.setCommonErrorHandler(new DefaultErrorHandler(recoverer, new FixedBackOff(0, 0)));
        container.start();
        long deadline = System.currentTimeMillis() + 60_000;
        while (failed.get() < count) {
            if (System.currentTimeMillis() > deadline) {
                throw new IllegalStateException("only " + failed.get() + " of " + count + " records failed in 60 s");
            }
            Thread.sleep(50);
        }
        // The last forward is acknowledged before its offset is committed; stop() commits.
        Thread.sleep(Duration.ofSeconds(1).toMillis());
        container.stop();
    }
}
