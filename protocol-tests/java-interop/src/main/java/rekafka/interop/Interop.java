package rekafka.interop;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.Future;
import java.util.concurrent.atomic.AtomicBoolean;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

/**
 * The Java client's side of rekafka's interoperability tests (tests/java_interop.rs).
 *
 * <p>Usage: {@code Interop SUBCOMMAND --bootstrap HOST:PORT[,..] --name value ...}. Records travel
 * as JSON lines: {@code {"partition":p, "offset":o, "key":b64|null, "value":b64|null,
 * "headers":[["k", b64|null], ...]}}.
 *
 * <ul>
 *   <li>{@code produce --topic T --codec C --idempotent true|false}: records from stdin; prints
 *       {@code {"partition":p,"offset":o}} per record, in input order.
 *   <li>{@code txn-produce --topic T --codec C --txn-id ID}: records from stdin, and {@code
 *       {"end":"commit"|"abort"}} lines ending the open transaction; prints record metadata and
 *       {@code {"ended":"commit"|"abort"}}.
 *   <li>{@code consume --topic T --isolation read_committed|read_uncommitted --count N
 *       --timeout-ms M}: reads every partition from the beginning until N records came and every
 *       position reached the end offset (the last stable offset with read_committed) looked up
 *       then; prints each record, then {@code {"end_offsets":{..}}}.
 *   <li>{@code group-member --topic T --group G --assignor range|cooperative-sticky|consumer}: a
 *       classic group member (or, with {@code consumer}, a KIP-848 consumer-protocol member)
 *       committing what it consumed after each poll and when partitions are revoked; prints events with a wall-clock time in microseconds ({@code t}): {@code
 *       assigned}, {@code revoked}, {@code lost} (partitions), {@code record} (p, o), {@code
 *       commit} (p, o = the committed next offset), {@code commit_failed}; stops on a {@code
 *       stop} line or end of stdin, leaves the group and prints {@code closed}.
 * </ul>
 */
public final class Interop {
  private static final ObjectMapper JSON = new ObjectMapper();
  private static final PrintStream OUT =
      new PrintStream(new java.io.FileOutputStream(java.io.FileDescriptor.out), false,
          StandardCharsets.UTF_8);
  private static final int MAX_BYTES = 8 << 20;

  private Interop() {}

  public static void main(String[] argv) throws Exception {
    if (argv.length < 1) {
      throw new IllegalArgumentException("usage: Interop SUBCOMMAND --key value ...");
    }
    Map<String, String> args = new HashMap<>();
    for (int i = 1; i + 1 < argv.length; i += 2) {
      if (!argv[i].startsWith("--")) {
        throw new IllegalArgumentException("expected --name, got " + argv[i]);
      }
      args.put(argv[i].substring(2), argv[i + 1]);
    }
    switch (argv[0]) {
      case "produce" -> produce(args);
      case "txn-produce" -> txnProduce(args);
      case "consume" -> consume(args);
      case "group-member" -> groupMember(args);
      default -> throw new IllegalArgumentException("unknown subcommand " + argv[0]);
    }
    OUT.flush();
  }

  private static String need(Map<String, String> args, String name) {
    String v = args.get(name);
    if (v == null) {
      throw new IllegalArgumentException("missing --" + name);
    }
    return v;
  }

  private static synchronized void emit(ObjectNode line) {
    OUT.println(line.toString());
    OUT.flush();
  }

  private static long micros() {
    Instant now = Instant.now();
    return now.getEpochSecond() * 1_000_000L + now.getNano() / 1_000;
  }

  private static byte[] unb64(JsonNode n) {
    return n == null || n.isNull() ? null : Base64.getDecoder().decode(n.asText());
  }

  private static String b64(byte[] b) {
    return b == null ? null : Base64.getEncoder().encodeToString(b);
  }

  private static ProducerRecord<byte[], byte[]> toRecord(String topic, JsonNode j) {
    Integer partition = j.hasNonNull("partition") ? j.get("partition").asInt() : null;
    ProducerRecord<byte[], byte[]> r =
        new ProducerRecord<>(topic, partition, unb64(j.get("key")), unb64(j.get("value")));
    JsonNode hs = j.get("headers");
    if (hs != null) {
      for (JsonNode h : hs) {
        r.headers().add(h.get(0).asText(), unb64(h.get(1)));
      }
    }
    return r;
  }

  private static Properties producerProps(Map<String, String> args) {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, need(args, "bootstrap"));
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, ByteArraySerializer.class.getName());
    p.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, args.getOrDefault("codec", "none"));
    p.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, Integer.toString(MAX_BYTES));
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.LINGER_MS_CONFIG, "5");
    return p;
  }

  private static List<JsonNode> readLines() throws Exception {
    List<JsonNode> out = new ArrayList<>();
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    for (String line; (line = in.readLine()) != null; ) {
      if (!line.isBlank()) {
        out.add(JSON.readTree(line));
      }
    }
    return out;
  }

  private static ObjectNode meta(RecordMetadata m) {
    ObjectNode o = JSON.createObjectNode();
    o.put("partition", m.partition());
    o.put("offset", m.offset());
    return o;
  }

  private static void produce(Map<String, String> args) throws Exception {
    String topic = need(args, "topic");
    Properties p = producerProps(args);
    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, need(args, "idempotent"));
    List<JsonNode> lines = readLines();
    List<Future<RecordMetadata>> sent = new ArrayList<>();
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
      for (JsonNode j : lines) {
        sent.add(producer.send(toRecord(topic, j)));
      }
      producer.flush();
      for (Future<RecordMetadata> f : sent) {
        emit(meta(f.get()));
      }
    }
  }

  private static void txnProduce(Map<String, String> args) throws Exception {
    String topic = need(args, "topic");
    Properties p = producerProps(args);
    p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, need(args, "txn-id"));
    List<JsonNode> lines = readLines();
    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
      producer.initTransactions();
      boolean open = false;
      List<Future<RecordMetadata>> sent = new ArrayList<>();
      for (JsonNode j : lines) {
        if (j.has("end")) {
          String end = j.get("end").asText();
          producer.flush();
          for (Future<RecordMetadata> f : sent) {
            emit(meta(f.get()));
          }
          sent.clear();
          if (!open) {
            producer.beginTransaction();
          }
          if (end.equals("commit")) {
            producer.commitTransaction();
          } else if (end.equals("abort")) {
            producer.abortTransaction();
          } else {
            throw new IllegalArgumentException("end must be commit or abort: " + end);
          }
          open = false;
          ObjectNode o = JSON.createObjectNode();
          o.put("ended", end);
          emit(o);
          continue;
        }
        if (!open) {
          producer.beginTransaction();
          open = true;
        }
        sent.add(producer.send(toRecord(topic, j)));
      }
      if (open) {
        throw new IllegalArgumentException("input ended inside a transaction");
      }
    }
  }

  private static Properties consumerProps(Map<String, String> args) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, need(args, "bootstrap"));
    p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, ByteArrayDeserializer.class.getName());
    p.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, Integer.toString(MAX_BYTES));
    p.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, Integer.toString(4 * MAX_BYTES));
    p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, "false");
    return p;
  }

  private static ObjectNode recordJson(ConsumerRecord<byte[], byte[]> r) {
    ObjectNode o = JSON.createObjectNode();
    o.put("partition", r.partition());
    o.put("offset", r.offset());
    o.put("key", b64(r.key()));
    o.put("value", b64(r.value()));
    ArrayNode hs = o.putArray("headers");
    for (Header h : r.headers()) {
      ArrayNode pair = hs.addArray();
      pair.add(h.key());
      pair.add(b64(h.value()));
    }
    return o;
  }

  private static void consume(Map<String, String> args) throws Exception {
    String topic = need(args, "topic");
    Properties p = consumerProps(args);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, need(args, "isolation"));
    long deadline = System.currentTimeMillis() + Long.parseLong(need(args, "timeout-ms"));
    try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p)) {
      List<TopicPartition> tps = new ArrayList<>();
      while (tps.isEmpty()) {
        // A topic just created may not be in every broker's metadata yet.
        for (PartitionInfo info : consumer.partitionsFor(topic, Duration.ofSeconds(30))) {
          tps.add(new TopicPartition(topic, info.partition()));
        }
        if (tps.isEmpty()) {
          if (System.currentTimeMillis() > deadline) {
            throw new IllegalStateException("topic " + topic + " not found");
          }
          Thread.sleep(100);
        }
      }
      consumer.assign(tps);
      consumer.seekToBeginning(tps);
      long want = Long.parseLong(args.getOrDefault("count", "0"));
      long seen = 0;
      Map<TopicPartition, Long> end = null;
      while (true) {
        if (seen >= want) {
          if (end == null) {
            end = consumer.endOffsets(tps, Duration.ofSeconds(30));
          }
          boolean done = true;
          for (TopicPartition tp : tps) {
            done &= consumer.position(tp, Duration.ofSeconds(30)) >= end.get(tp);
          }
          if (done) {
            break;
          }
        }
        if (System.currentTimeMillis() > deadline) {
          throw new IllegalStateException(
              "timed out after " + seen + " of " + want + " records, end offsets " + end);
        }
        for (ConsumerRecord<byte[], byte[]> r : consumer.poll(Duration.ofMillis(200))) {
          emit(recordJson(r));
          seen++;
        }
      }
      ObjectNode o = JSON.createObjectNode();
      ObjectNode ends = o.putObject("end_offsets");
      end.forEach((tp, off) -> ends.put(Integer.toString(tp.partition()), off));
      emit(o);
    }
  }

  private static ObjectNode event(String kind) {
    ObjectNode o = JSON.createObjectNode();
    o.put("ev", kind);
    o.put("t", micros());
    return o;
  }

  private static ObjectNode partitionsEvent(String kind, Collection<TopicPartition> ps, long t) {
    ObjectNode o = JSON.createObjectNode();
    o.put("ev", kind);
    o.put("t", t);
    ArrayNode a = o.putArray("partitions");
    ps.forEach(tp -> a.add(tp.partition()));
    return o;
  }

  /** Commits `next` offsets of `ps` (those consumed since their last commit) synchronously. */
  private static void commit(
      KafkaConsumer<byte[], byte[]> consumer,
      Map<TopicPartition, Long> pending,
      Collection<TopicPartition> ps) {
    Map<TopicPartition, OffsetAndMetadata> offsets = new HashMap<>();
    for (TopicPartition tp : ps) {
      Long next = pending.get(tp);
      if (next != null) {
        offsets.put(tp, new OffsetAndMetadata(next));
      }
    }
    if (offsets.isEmpty()) {
      return;
    }
    try {
      consumer.commitSync(offsets);
      for (Map.Entry<TopicPartition, OffsetAndMetadata> e : offsets.entrySet()) {
        pending.remove(e.getKey());
        ObjectNode o = event("commit");
        o.put("p", e.getKey().partition());
        o.put("o", e.getValue().offset());
        emit(o);
      }
    } catch (RuntimeException e) {
      ObjectNode o = event("commit_failed");
      o.put("error", e.toString());
      emit(o);
    }
  }

  private static void groupMember(Map<String, String> args) throws Exception {
    String topic = need(args, "topic");
    String name = need(args, "assignor");
    Properties p = consumerProps(args);
    p.put(ConsumerConfig.GROUP_ID_CONFIG, need(args, "group"));
    if (name.equals("consumer")) {
      // KIP-848: the coordinator assigns (its default assignor) and sets the heartbeat
      // interval and session timeout.
      p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "consumer");
    } else {
      String assignor =
          switch (name) {
            case "range" -> "org.apache.kafka.clients.consumer.RangeAssignor";
            case "cooperative-sticky" ->
                "org.apache.kafka.clients.consumer.CooperativeStickyAssignor";
            default ->
                throw new IllegalArgumentException(
                    "assignor: range, cooperative-sticky or consumer (the KIP-848 protocol)");
          };
      p.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
      p.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor);
      p.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, "30000");
      p.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, "1000");
    }
    p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, "50");
    p.put(ConsumerConfig.CLIENT_ID_CONFIG, args.getOrDefault("client-id", "java-member"));
    AtomicBoolean stop = new AtomicBoolean();
    KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(p);
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
    // Next offset to commit per partition, for records consumed since the last commit.
    Map<TopicPartition, Long> pending = new HashMap<>();
    consumer.subscribe(
        List.of(topic),
        new ConsumerRebalanceListener() {
          @Override
          public void onPartitionsRevoked(Collection<TopicPartition> ps) {
            commit(consumer, pending, ps);
            ps.forEach(pending::remove);
            emit(partitionsEvent("revoked", ps, micros()));
          }

          @Override
          public void onPartitionsAssigned(Collection<TopicPartition> ps) {
            emit(partitionsEvent("assigned", ps, micros()));
          }

          @Override
          public void onPartitionsLost(Collection<TopicPartition> ps) {
            ps.forEach(pending::remove);
            emit(partitionsEvent("lost", ps, micros()));
          }
        });
    {
      while (!stop.get()) {
        ConsumerRecords<byte[], byte[]> records = consumer.poll(Duration.ofMillis(100));
        long t = micros();
        for (ConsumerRecord<byte[], byte[]> r : records) {
          ObjectNode o = JSON.createObjectNode();
          o.put("ev", "record");
          o.put("t", t);
          o.put("p", r.partition());
          o.put("o", r.offset());
          emit(o);
          pending.put(new TopicPartition(r.topic(), r.partition()), r.offset() + 1);
        }
        commit(consumer, pending, new ArrayList<>(pending.keySet()));
      }
    }
    // close() runs onPartitionsRevoked (which commits) and leaves the group.
    consumer.close(org.apache.kafka.clients.consumer.CloseOptions.timeout(Duration.ofSeconds(30)));
    emit(event("closed"));
  }
}
