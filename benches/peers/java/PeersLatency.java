// End-to-end latency driver of benches/peers/run.sh for the Java client (kafka-clients from
// .tools/kafka/lib): the same schedule, value layout, warm-up and output line as
// examples/peers_latency.rs, which documents them.
//
//   javac -cp '.tools/kafka/lib/*' -d target/peers/java benches/peers/java/PeersLatency.java
//   java -cp "target/peers/java:.tools/kafka/lib/*" PeersLatency -b BROKERS -t TOPIC -r RATE -d SECONDS -s BYTES
//
// The producer and the consumer are at their defaults apart from acks=all (the producer's
// default too) and, for the consumer, byte-array deserializers and no auto-commit (it has no
// group: it is assigned every partition from the start).

import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.concurrent.locks.LockSupport;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;

public final class PeersLatency {
    /** Records sent before this (ns since the epoch) are warm-up; set when producing starts. */
    private static volatile long warmUntil = Long.MAX_VALUE;

    private static long nowNs() {
        java.time.Instant t = java.time.Instant.now();
        return t.getEpochSecond() * 1_000_000_000L + t.getNano();
    }

    private static double pct(long[] xs, double p) {
        if (xs.length == 0) return Double.NaN;
        int rank = (int) Math.ceil(p * xs.length);
        rank = Math.max(1, Math.min(xs.length, rank));
        return xs[rank - 1] / 1e6;
    }

    public static void main(String[] argv) throws Exception {
        String bootstrap = System.getenv().getOrDefault("REKAFKA_BOOTSTRAP", "");
        String topic = "";
        long rate = 10_000, secs = 30;
        int size = 100;
        for (int i = 0; i + 1 < argv.length; i += 2) {
            switch (argv[i]) {
                case "-b": bootstrap = argv[i + 1]; break;
                case "-t": topic = argv[i + 1]; break;
                case "-r": rate = Long.parseLong(argv[i + 1]); break;
                case "-d": secs = Long.parseLong(argv[i + 1]); break;
                case "-s": size = Integer.parseInt(argv[i + 1]); break;
                default: throw new IllegalArgumentException("unknown argument " + argv[i]);
            }
        }
        if (bootstrap.isEmpty() || topic.isEmpty() || rate <= 0 || secs < 2 || size < 8) {
            System.err.println("usage: PeersLatency -b BROKERS -t TOPIC -r RATE -d SECONDS(>=2) -s BYTES(>=8)");
            System.exit(2);
        }
        final long total = rate * secs;

        Properties cp = new Properties();
        cp.put("bootstrap.servers", bootstrap);
        cp.put("enable.auto.commit", "false");
        cp.put("key.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        cp.put("value.deserializer", "org.apache.kafka.common.serialization.ByteArrayDeserializer");
        KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp);
        List<TopicPartition> tps = new ArrayList<>();
        for (PartitionInfo p : consumer.partitionsFor(topic)) tps.add(new TopicPartition(topic, p.partition()));
        consumer.assign(tps);
        consumer.seekToBeginning(tps);
        for (TopicPartition tp : tps) consumer.position(tp);

        final AtomicReference<String> readerError = new AtomicReference<>();
        final long[][] result = new long[1][];
        Thread reader = new Thread(() -> {
            long[] lat = new long[(int) total];
            int m = 0;
            long n = 0;
            long idle = System.nanoTime();
            try {
                while (n < total) {
                    ConsumerRecords<byte[], byte[]> recs = consumer.poll(Duration.ofMillis(100));
                    if (recs.isEmpty()) {
                        if (System.nanoTime() - idle > 10_000_000_000L) {
                            readerError.set("only " + n + " of " + total + " records arrived");
                            return;
                        }
                        continue;
                    }
                    idle = System.nanoTime();
                    long now = nowNs();
                    for (ConsumerRecord<byte[], byte[]> r : recs) {
                        n++;
                        byte[] v = r.value();
                        if (v == null || v.length < 8) {
                            readerError.set("a record without a send time");
                            return;
                        }
                        long sent = ByteBuffer.wrap(v, 0, 8).getLong();
                        if (sent >= warmUntil) lat[m++] = Math.max(0, now - sent);
                    }
                }
                result[0] = Arrays.copyOf(lat, m);
            } catch (RuntimeException e) {
                readerError.set(e.toString());
            }
        });
        reader.start();

        Properties pp = new Properties();
        pp.put("bootstrap.servers", bootstrap);
        pp.put("acks", "all");
        pp.put("key.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        pp.put("value.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        AtomicLong failed = new AtomicLong();
        AtomicReference<Exception> firstError = new AtomicReference<>();
        warmUntil = nowNs() + 1_000_000_000L;
        long start = System.nanoTime();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            for (long i = 0; i < total; i++) {
                long due = start + i * 1_000_000_000L / rate;
                long wait = due - System.nanoTime();
                if (wait > 0) LockSupport.parkNanos(wait);
                byte[] v = new byte[size];
                Arrays.fill(v, 8, size, (byte) 'x');
                ByteBuffer.wrap(v).putLong(nowNs());
                producer.send(new ProducerRecord<>(topic, v), (md, e) -> {
                    if (e != null && failed.incrementAndGet() == 1) firstError.set(e);
                });
            }
            producer.flush();
        }
        double elapsed = (System.nanoTime() - start) / 1e9;
        if (failed.get() > 0) {
            System.err.println("error: " + failed.get() + " records failed; first: " + firstError.get());
            System.exit(1);
        }
        reader.join();
        consumer.close();
        if (readerError.get() != null) {
            System.err.println("error: " + readerError.get());
            System.exit(1);
        }
        long[] lat = result[0];
        Arrays.sort(lat);
        System.out.printf("records=%d measured=%d secs=%.3f rate=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f%n",
            total, lat.length, elapsed, total / elapsed, pct(lat, 0.5), pct(lat, 0.99), pct(lat, 0.999), pct(lat, 1.0));
    }
}
