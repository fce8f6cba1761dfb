package rekafka.spring;

import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.springframework.kafka.core.DefaultKafkaConsumerFactory;
import org.springframework.kafka.core.DefaultKafkaProducerFactory;
import org.springframework.kafka.core.KafkaTemplate;
import org.springframework.kafka.listener.ContainerProperties;
import org.springframework.kafka.listener.DeadLetterPublishingRecoverer;
import org.springframework.kafka.listener.DefaultErrorHandler;
import org.springframework.kafka.listener.KafkaMessageListenerContainer;
import org.springframework.kafka.listener.MessageListener;
import org.springframework.kafka.support.KafkaHeaders;
import org.springframework.kafka.support.converter.MessagingMessageConverter;
import org.springframework.kafka.support.serializer.ErrorHandlingDeserializer;
import org.springframework.messaging.Message;
import org.springframework.messaging.MessageHeaders;
import org.springframework.util.backoff.FixedBackOff;

import com.fasterxml.jackson.databind.node.ObjectNode;

/**
 * Dead-letter interoperability with rekafka (cli/tests/spring_dlt_interop.rs).
 *
 * <pre>
 * write --bootstrap B --prefix P
 *     creates P-in (2 partitions), P-in-dlt and P-in-retry-dlt, produces four records
 *     (timestamps 1700000000000 + i; the fourth has a key that is not UTF-8), and lets two
 *     Spring containers fail every record: group P-g1 dead-letters them to P-in-dlt with the
 *     kafka_dlt-* headers, group P-g2 to P-in-retry-dlt with the header names of Spring's
 *     retry topics (kafka_original-*, kafka_exception-*), as its retry-topic support does.
 * read --bootstrap B --topic T [--partitions N]
 *     reads T through Spring's MessagingMessageConverter and prints, per record, what the
 *     KafkaHeaders.DLT_* headers say (JSON lines).
 * </pre>
 */
public final class DltInterop {

    private DltInterop() {
    }

    public static void main(String[] args) throws Exception {
        Map<String, String> a = new HashMap<>();
        for (int i = 1; i + 1 < args.length; i += 2) {
            a.put(args[i], args[i + 1]);
        }
        String bootstrap = a.get("--bootstrap");
        switch (args.length > 0 ? args[0] : "") {
            case "write":
                write(bootstrap, a.get("--prefix"));
                break;
            case "read":
                read(bootstrap, a.get("--topic"), Integer.parseInt(a.getOrDefault("--partitions", "2")));
                break;
            default:
                System.err.println("usage: DltInterop write|read ...");
                System.exit(2);
        }
        System.exit(0);
    }

    static Map<String, Object> producerProps(String bootstrap) {
        Map<String, Object> p = new HashMap<>();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, Errors.BytesOrStringSerializer.class);
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, Errors.BytesOrStringSerializer.class);
        return p;
    }

    static void write(String bootstrap, String prefix) throws Exception {
        String in = prefix + "-in";
        try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
            admin.createTopics(List.of(new NewTopic(in, 2, (short) 1), new NewTopic(in + "-dlt", 2, (short) 1),
                    new NewTopic(in + "-retry-dlt", 2, (short) 1))).all().get(60, TimeUnit.SECONDS);
        }
        try (KafkaProducer<Object, Object> p = new KafkaProducer<>(producerProps(bootstrap))) {
            for (int i = 0; i < 4; i++) {
                RecordHeaders h = new RecordHeaders();
                if (i == 2) {
                    h.add(new RecordHeader("trace", "t2".getBytes(StandardCharsets.UTF_8)));
                }
                Object key = i == 3 ? new byte[] {(byte) 0xff, 0x01} : ("k" + i);
                p.send(new ProducerRecord<>(in, i % 2, Runner.BASE_TIMESTAMP + i, key, "v" + i, h))
                        .get(30, TimeUnit.SECONDS);
            }
        }
        KafkaTemplate<Object, Object> template =
                new KafkaTemplate<>(new DefaultKafkaProducerFactory<>(producerProps(bootstrap)));

        DeadLetterPublishingRecoverer plain = new DeadLetterPublishingRecoverer(template);
        DeadLetterPublishingRecoverer retryStyle = new DeadLetterPublishingRecoverer(template,
                (r, e) -> new TopicPartition(r.topic() + "-retry-dlt", r.partition()));
        // The header names Spring's retry-topic support writes (DeadLetterPublishingRecovererFactory).
        retryStyle.setHeaderNamesSupplier(() -> DeadLetterPublishingRecoverer.HeaderNames.Builder.original()
                .offsetHeader(KafkaHeaders.ORIGINAL_OFFSET)
                .timestampHeader(KafkaHeaders.ORIGINAL_TIMESTAMP)
                .timestampTypeHeader(KafkaHeaders.ORIGINAL_TIMESTAMP_TYPE)
                .topicHeader(KafkaHeaders.ORIGINAL_TOPIC)
                .partitionHeader(KafkaHeaders.ORIGINAL_PARTITION)
                .consumerGroupHeader(KafkaHeaders.ORIGINAL_CONSUMER_GROUP)
                .exception()
                .keyExceptionFqcn(KafkaHeaders.KEY_EXCEPTION_FQCN)
                .exceptionFqcn(KafkaHeaders.EXCEPTION_FQCN)
                .exceptionCauseFqcn(KafkaHeaders.EXCEPTION_CAUSE_FQCN)
                .keyExceptionMessage(KafkaHeaders.KEY_EXCEPTION_MESSAGE)
                .exceptionMessage(KafkaHeaders.EXCEPTION_MESSAGE)
                .keyExceptionStacktrace(KafkaHeaders.KEY_EXCEPTION_STACKTRACE)
                .exceptionStacktrace(KafkaHeaders.EXCEPTION_STACKTRACE)
                .build());
        retryStyle.setAppendOriginalHeaders(false);

        List<KafkaMessageListenerContainer<String, String>> containers = new ArrayList<>();
        int g = 1;
        for (DeadLetterPublishingRecoverer dlpr : List.of(plain, retryStyle)) {
            Map<String, Object> c = new HashMap<>();
            c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
            c.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ErrorHandlingDeserializer.class);
            c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ErrorHandlingDeserializer.class);
            c.put(ErrorHandlingDeserializer.KEY_DESERIALIZER_CLASS, Errors.StrictUtf8Deserializer.class);
            c.put(ErrorHandlingDeserializer.VALUE_DESERIALIZER_CLASS, Errors.StrictUtf8Deserializer.class);
            ContainerProperties props = new ContainerProperties(in);
            props.setGroupId(prefix + "-g" + g++);
            props.setPollTimeout(200);
            props.setMessageListener((MessageListener<String, String>) r -> {
                throw new Errors.Wrapper("wrapped " + r.value(),
                        new Errors.Fatal("fatal " + r.value(), null));
            });
            KafkaMessageListenerContainer<String, String> container =
                    new KafkaMessageListenerContainer<>(new DefaultKafkaConsumerFactory<>(c), props);
            container.setCommonErrorHandler(new DefaultErrorHandler(dlpr, new FixedBackOff(0, 0)));
            container.start();
            containers.add(container);
        }
        try (KafkaConsumer<byte[], byte[]> probe = reader(bootstrap)) {
            List<TopicPartition> dlts = new ArrayList<>();
            for (String t : List.of(in + "-dlt", in + "-retry-dlt")) {
                dlts.add(new TopicPartition(t, 0));
                dlts.add(new TopicPartition(t, 1));
            }
            long deadline = System.currentTimeMillis() + 60_000;
            while (true) {
                long total = probe.endOffsets(dlts, Duration.ofSeconds(10)).values().stream()
                        .mapToLong(Long::longValue).sum();
                if (total >= 8) {
                    break;
                }
                if (System.currentTimeMillis() > deadline) {
                    throw new IllegalStateException("only " + total + " of 8 dead letters after 60 s");
                }
                Thread.sleep(100);
            }
        }
        for (KafkaMessageListenerContainer<String, String> c : containers) {
            c.stop();
        }
    }

    static KafkaConsumer<byte[], byte[]> reader(String bootstrap) {
        Map<String, Object> c = new HashMap<>();
        c.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
        c.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        c.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class);
        c.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        return new KafkaConsumer<>(c);
    }

    static String str(MessageHeaders h, String name) {
        Object v = h.get(name);
        if (v == null) {
            return null;
        }
        return v instanceof byte[] b ? new String(b, StandardCharsets.UTF_8) : v.toString();
    }

    static Long num(MessageHeaders h, String name) {
        Object v = h.get(name);
        if (!(v instanceof byte[] b)) {
            return null;
        }
        ByteBuffer bb = ByteBuffer.wrap(b);
        return b.length == 4 ? (long) bb.getInt() : b.length == 8 ? bb.getLong() : null;
    }

    /** Reads the topic as a Spring listener sees its records: through Spring's header mapping. */
    static void read(String bootstrap, String topic, int partitions) throws Exception {
        MessagingMessageConverter converter = new MessagingMessageConverter();
        try (KafkaConsumer<byte[], byte[]> c = reader(bootstrap)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < partitions; p++) {
                tps.add(new TopicPartition(topic, p));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps, Duration.ofSeconds(10));
            long deadline = System.currentTimeMillis() + 30_000;
            while (System.currentTimeMillis() < deadline) {
                boolean atEnd = true;
                for (TopicPartition tp : tps) {
                    if (c.position(tp) < end.get(tp)) {
                        atEnd = false;
                    }
                }
                if (atEnd) {
                    break;
                }
                for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(200))) {
                    Message<?> m = converter.toMessage(r, null, null, byte[].class);
                    MessageHeaders h = m.getHeaders();
                    ObjectNode o = Runner.JSON.createObjectNode();
                    o.put("partition", r.partition());
                    o.put("value", new String((byte[]) m.getPayload(), StandardCharsets.UTF_8));
                    o.put("original_topic", str(h, KafkaHeaders.DLT_ORIGINAL_TOPIC));
                    o.put("original_partition", num(h, KafkaHeaders.DLT_ORIGINAL_PARTITION));
                    o.put("original_offset", num(h, KafkaHeaders.DLT_ORIGINAL_OFFSET));
                    o.put("original_timestamp", num(h, KafkaHeaders.DLT_ORIGINAL_TIMESTAMP));
                    o.put("original_timestamp_type", str(h, KafkaHeaders.DLT_ORIGINAL_TIMESTAMP_TYPE));
                    o.put("original_consumer_group", str(h, KafkaHeaders.DLT_ORIGINAL_CONSUMER_GROUP));
                    o.put("exception_fqcn", str(h, KafkaHeaders.DLT_EXCEPTION_FQCN));
                    o.put("exception_cause_fqcn", str(h, KafkaHeaders.DLT_EXCEPTION_CAUSE_FQCN));
                    o.put("exception_message", str(h, KafkaHeaders.DLT_EXCEPTION_MESSAGE));
                    o.put("exception_stacktrace", str(h, KafkaHeaders.DLT_EXCEPTION_STACKTRACE));
                    o.put("key_exception_fqcn", str(h, KafkaHeaders.DLT_KEY_EXCEPTION_FQCN));
                    o.put("key_exception_message", str(h, KafkaHeaders.DLT_KEY_EXCEPTION_MESSAGE));
                    System.out.println(Runner.JSON.writeValueAsString(o));
                }
            }
        }
    }
}
