package rekafka.interop;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.AcknowledgeType;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaShareConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicIdPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;

/**
 * A Java {@code KafkaShareConsumer} member of a share group, for tests/share_java_interop.rs.
 *
 * <p>Usage: {@code ShareMember --bootstrap B --topic T --group G --fail-twice-mod M1
 * --fail-twice-rem R1 --fail-always-mod M2 --fail-always-rem R2 --max-deliveries D}. Record values
 * are {@code v-<i>}. Explicit acknowledgement: a record whose index {@code i % M1 == R1} is
 * released on its deliveries 1 and 2 and accepted on delivery 3; one with {@code i % M2 == R2} is
 * released until delivery D, then rejected; every other record is accepted. Prints one JSON line
 * per record ({@code {"ev":"record","p":p,"o":o,"v":"v-i","dc":n,"ack":"accept|release|reject"}}),
 * {@code commit_failed} lines for acknowledgements the broker refused, {@code closed} at the
 * end. Stops on a {@code stop} line or the end of stdin.
 *
 * <p>With {@code --dead-letter-topic DLT} (tests/share_container_java_kafka.rs), an always-failing
 * record on delivery D is dead-lettered instead of rejected, as rekafka's share container with
 * a dead-letter publisher does (and Spring's {@code DeadLetterPublishingRecoverer}): the original
 * key, value and headers, then {@code kafka_deliveryAttempt} (the delivery count, 4-byte
 * big-endian), the {@code kafka_dlt-exception-*} headers and the {@code kafka_dlt-original-*}
 * provenance headers, in that order, sent to the same partition of DLT; once the send is
 * acknowledged the record is accepted (its line then has {@code "dlt":true}). A failed send
 * releases the record instead (it comes back), with a {@code dlt_failed} line.
 */
public final class ShareMember {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final PrintStream OUT =
      new PrintStream(
          new java.io.FileOutputStream(java.io.FileDescriptor.out), false, StandardCharsets.UTF_8);

  private ShareMember() {}

  private static synchronized void emit(ObjectNode line) {
    OUT.println(line.toString());
    OUT.flush();
  }

  private static String need(Map<String, String> args, String name) {
    String v = args.get(name);
    if (v == null) {
      throw new IllegalArgumentException("missing --" + name);
    }
    return v;
  }

  private static byte[] utf8(String s) {
    return s.getBytes(StandardCharsets.UTF_8);
  }

  /** The dead letter of {@code r}: its headers as rekafka's share container writes them. */
  private static ProducerRecord<byte[], byte[]> deadLetter(
      ConsumerRecord<byte[], byte[]> r, String dlt, String group, int dc, Exception error) {
    RecordHeaders h = new RecordHeaders();
    for (Header original : r.headers()) {
      h.add(original);
    }
    h.add("kafka_deliveryAttempt", ByteBuffer.allocate(4).putInt(dc).array());
    String fqcn = error.getClass().getName();
    Throwable cause = error.getCause() == null ? error : error.getCause();
    StringWriter trace = new StringWriter();
    error.printStackTrace(new PrintWriter(trace));
    h.add("kafka_dlt-exception-fqcn", utf8(fqcn));
    h.add("kafka_dlt-exception-cause-fqcn", utf8(cause.getClass().getName()));
    h.add("kafka_dlt-exception-message", utf8(String.valueOf(error.getMessage())));
    h.add("kafka_dlt-exception-stacktrace", utf8(trace.toString()));
    h.add("kafka_dlt-original-topic", utf8(r.topic()));
    h.add("kafka_dlt-original-partition", ByteBuffer.allocate(4).putInt(r.partition()).array());
    h.add("kafka_dlt-original-offset", ByteBuffer.allocate(8).putLong(r.offset()).array());
    h.add("kafka_dlt-original-timestamp", ByteBuffer.allocate(8).putLong(r.timestamp()).array());
    h.add("kafka_dlt-original-timestamp-type", utf8(r.timestampType().toString()));
    h.add("kafka_dlt-original-consumer-group", utf8(group));
    return new ProducerRecord<>(dlt, r.partition(), r.key(), r.value(), h);
  }

  public static void main(String[] argv) throws Exception {
    Map<String, String> args = new HashMap<>();
    for (int i = 0; i + 1 < argv.length; i += 2) {
      args.put(argv[i].substring(2), argv[i + 1]);
    }
    int twiceMod = Integer.parseInt(need(args, "fail-twice-mod"));
    int twiceRem = Integer.parseInt(need(args, "fail-twice-rem"));
    int alwaysMod = Integer.parseInt(need(args, "fail-always-mod"));
    int alwaysRem = Integer.parseInt(need(args, "fail-always-rem"));
    int maxDeliveries = Integer.parseInt(need(args, "max-deliveries"));
    String dlt = args.get("dead-letter-topic");
    String group = need(args, "group");
    KafkaProducer<byte[], byte[]> producer = null;
    if (dlt != null) {
      Properties pp = new Properties();
      pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, need(args, "bootstrap"));
      pp.put(ProducerConfig.CLIENT_ID_CONFIG, "java-share-member-dlt");
      pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
      pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
      producer = new KafkaProducer<>(pp);
    }
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, need(args, "bootstrap"));
    p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
    p.put(ConsumerConfig.CLIENT_ID_CONFIG, "java-share-member");
    p.put(ConsumerConfig.SHARE_ACKNOWLEDGEMENT_MODE_CONFIG, "explicit");
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    AtomicBoolean stop = new AtomicBoolean();
    Thread stdin =
        new Thread(
            () -> {
              try {
                BufferedReader in =
                    new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
                for (String line; (line = in.readLine()) != null; ) {
                  if (line.trim().equals("stop")) {
                    break;
                  }
                }
              } catch (Exception e) {
                // End of input or a broken pipe: stop either way.
              }
              stop.set(true);
            });
    stdin.setDaemon(true);
    stdin.start();
    try (KafkaShareConsumer<byte[], byte[]> consumer = new KafkaShareConsumer<>(p)) {
      consumer.subscribe(List.of(need(args, "topic")));
      ObjectNode started = JSON.createObjectNode();
      started.put("ev", "started");
      emit(started);
      while (!stop.get()) {
        ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(100));
        for (ConsumerRecord<byte[], byte[]> r : records) {
          String v = new String(r.value(), StandardCharsets.UTF_8);
          int i = Integer.parseInt(v.substring(2));
          int dc = r.deliveryCount().map(Short::intValue).orElse(-1);
          AcknowledgeType ack;
          boolean deadLettered = false;
          if (i % twiceMod == twiceRem) {
            ack = dc < 3 ? AcknowledgeType.RELEASE : AcknowledgeType.ACCEPT;
          } else if (i % alwaysMod == alwaysRem) {
            if (dc < maxDeliveries) {
              ack = AcknowledgeType.RELEASE;
            } else if (producer != null) {
              Exception error = new IllegalStateException("poison record " + i);
              try {
                producer.send(deadLetter(r, dlt, group, dc, error)).get();
                ack = AcknowledgeType.ACCEPT;
                deadLettered = true;
              } catch (Exception e) {
                ack = AcknowledgeType.RELEASE;
                ObjectNode o = JSON.createObjectNode();
                o.put("ev", "dlt_failed");
                o.put("o", r.offset());
                o.put("error", e.toString());
                emit(o);
              }
            } else {
              ack = AcknowledgeType.REJECT;
            }
          } else {
            ack = AcknowledgeType.ACCEPT;
          }
          consumer.acknowledge(r, ack);
          ObjectNode o = JSON.createObjectNode();
          o.put("ev", "record");
          o.put("p", r.partition());
          o.put("o", r.offset());
          o.put("v", v);
          o.put("dc", dc);
          o.put("ack", ack.toString().toLowerCase());
          if (deadLettered) {
            o.put("dlt", true);
          }
          emit(o);
        }
        if (!records.isEmpty()) {
          Map<TopicIdPartition, Optional<KafkaException>> results = consumer.commitSync();
          for (Map.Entry<TopicIdPartition, Optional<KafkaException>> e : results.entrySet()) {
            if (e.getValue().isPresent()) {
              ObjectNode o = JSON.createObjectNode();
              o.put("ev", "commit_failed");
              o.put("p", e.getKey().partition());
              o.put("error", e.getValue().get().toString());
              emit(o);
            }
          }
        }
      }
    }
    if (producer != null) {
      producer.close();
    }
    ObjectNode closed = JSON.createObjectNode();
    closed.put("ev", "closed");
    emit(closed);
  }
}
