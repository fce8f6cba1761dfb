package rekafka.peers;

import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.ConcurrentMessageListenerContainer;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.listener.MessageListener;
import org.springframework.util.backoff.FixedBackOff;

/**
 * The Spring for Apache Kafka peer of benches/peers/run.sh's container and poison workloads,
 * the same design as benches/listener.rs (rekafka):
 *
 * <pre>
 *   PeersSpring loop      -b BOOTSTRAP -t TOPIC -n COUNT -g GROUP   bare KafkaConsumer loop
 *   PeersSpring container -b ... -t ... -n ... -g ...               ConcurrentMessageListenerContainer
 *   PeersSpring plain     -b ... -t ... -n ... -g ...               the poison container, nothing fails
 *   PeersSpring poison    -b ... -t ... -n ... -g ...               values starting with "poison" fail
 * </pre>
 *
 * loop: a KafkaConsumer (defaults, auto commit off, earliest) subscribed in GROUP, polling with
 * a 1 s timeout, doing the per-record work (two shared counters) and commitSync() after every
 * poll that returned records. container: a ConcurrentMessageListenerContainer (concurrency 1,
 * AckMode.BATCH, the container's default error handler) with a record MessageListener doing the
 * same work. plain / poison: the same container with DefaultErrorHandler(new
 * DeadLetterPublishingRecoverer(template, TOPIC.DLT on the record's partition), new
 * FixedBackOff(0, 0)) and a KafkaTemplate at the producer's defaults; in poison mode the
 * listener throws for a value starting with "poison". Each mode stops once the listener (loop
 * body) has been called COUNT times (the container: stop(), which waits for its consumer thread
 * and so for the last poll's commit) and prints benches/listener.rs's line: "mode=M records=N
 * secs=S from_first_s=F rec_per_s=R rec_per_s_from_start=R0", R from the first record handed to
 * the listener (so without JVM start, connecting and the group join) to the end, S and R0 from
 * the container's start (the consumer's creation).
 */
public final class PeersSpring {
    private static final byte[] POISON = "poison".getBytes();
    /** System.nanoTime() of the first record handed to the listener (loop body), 0 before. */
    private static final AtomicLong FIRST = new AtomicLong();

    private static void firstRecord() {
        if (FIRST.get() == 0) {
            FIRST.compareAndSet(0, System.nanoTime());
        }
    }

    static final class PoisonException extends RuntimeException {
        PoisonException() {
            super("poison record");
        }
    }

    public static void main(String[] args) throws Exception {
        String mode = args[0];
        String bootstrap = null, topic = null, group = null;
        long count = 0;
        for (int i = 1; i + 1 < args.length; i += 2) {
            switch (args[i]) {
                case "-b" -> bootstrap = args[i + 1];
                case "-t" -> topic = args[i + 1];
                case "-n" -> count = Long.parseLong(args[i + 1]);
                case "-g" -> group = args[i + 1];
                default -> throw new IllegalArgumentException("unknown option " + args[i]);
            }
        }
        if (bootstrap == null || topic == null || group == null || count <= 0) {
            System.err.println("usage: PeersSpring loop|container|plain|poison -b BOOTSTRAP -t TOPIC -n COUNT -g GROUP");
            System.exit(2);
        }
        Map<String, Object> props = new HashMap<>();
        props.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        props.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        props.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        props.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        props.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        props.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        long start = System.nanoTime();
        switch (mode) {
            case "loop" -> loop(props, topic, count);
            case "container" -> container(props, bootstrap, topic, count, false, false);
            case "plain" -> container(props, bootstrap, topic, count, true, false);
            case "poison" -> container(props, bootstrap, topic, count, true, true);
            default -> throw new IllegalArgumentException("unknown mode " + mode);
        }
        long end = System.nanoTime();
        double secs = (end - start) / 1e9;
        double fromFirst = FIRST.get() == 0 ? secs : (end - FIRST.get()) / 1e9;
        System.out.printf("mode=%s records=%d secs=%.3f from_first_s=%.3f rec_per_s=%.0f rec_per_s_from_start=%.0f%n",
                mode, count, secs, fromFirst, count / fromFirst, count / secs);
    }

    private static boolean isPoison(byte[] value) {
        if (value == null || value.length < POISON.length) {
            return false;
        }
        for (int i = 0; i < POISON.length; i++) {
            if (value[i] != POISON[i]) {
                return false;
            }
        }
        return true;
    }

    private static void loop(Map<String, Object> props, String topic, long count) {
        AtomicLong seen = new AtomicLong();
        AtomicLong bytes = new AtomicLong();
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(props)) {
            consumer.subscribe(List.of(topic));
            while (seen.get() < count) {
                ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofSeconds(1));
                for (ConsumerRecord<byte[], byte[]> r : records) {
                    firstRecord();
                    bytes.addAndGet(r.value() == null ? 0 : r.value().length);
                    seen.incrementAndGet();
                }
                if (!records.isEmpty()) {
                    consumer.commitSync();
                }
            }
        }
    }

    private static void container(Map<String, Object> props, String bootstrap, String topic, long count,
                                  boolean deadLetters, boolean fail) throws InterruptedException {
        AtomicLong seen = new AtomicLong();
        AtomicLong bytes = new AtomicLong();
        CountDownLatch done = new CountDownLatch(1);
        ContainerProperties cp = new ContainerProperties(topic);
        cp.setAckMode(ContainerProperties.AckMode.BATCH);
        cp.setPollTimeout(1000);
        cp.setMessageListener((MessageListener<byte[], byte[]>) r -> {
            firstRecord();
            bytes.addAndGet(r.value() == null ? 0 : r.value().length);
            boolean poison = isPoison(r.value());
            if (seen.incrementAndGet() == count) {
                done.countDown();
            }
            if (poison && fail) {
                throw new PoisonException();
            }
        });
        ConcurrentMessageListenerContainer<byte[], byte[]> container =
                new ConcurrentMessageListenerContainer<>(new DefaultKafkaConsumerFactory<>(props), cp);
        container.setConcurrency(1);
        DefaultKafkaProducerFactory<byte[], byte[]> pf = null;
        if (deadLetters) {
            Map<String, Object> pp = new HashMap<>();
            pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
            pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class);
            pf = new DefaultKafkaProducerFactory<>(pp);
            KafkaTemplate<byte[], byte[]> template = new KafkaTemplate<>(pf);
            DeadLetterPublishingRecoverer recoverer = new DeadLetterPublishingRecoverer(template,
                    (r, e) -> new TopicPartition(r.topic() + ".DLT", r.partition()));
            container.setCommonErrorHandler(new DefaultErrorHandler(recoverer, new FixedBackOff(0L, 0L)));
        }
        container.start();
        if (!done.await(600, TimeUnit.SECONDS)) {
            container.stop();
            throw new IllegalStateException("saw " + seen.get() + " of " + count + " records in 600 s");
        }
        container.stop();
        if (pf != null) {
            pf.destroy();
        }
    }
}
