// Keyed produce driver of benches/peers/run.sh for the Java client (kafka-clients from
// .tools/kafka/lib). ProducerPerformance has no key option, so the keyed workloads (lz4, zstd)
// run this instead; the unkeyed ones keep ProducerPerformance.
//
//   javac -cp '.tools/kafka/lib/*' -d target/peers/java benches/peers/java/PeersProduce.java
//   java -cp "target/peers/java:.tools/kafka/lib/*" PeersProduce -b BROKERS -t TOPIC -n COUNT -s BYTES [-acks all] [-z CODEC] [-keys K]
//
// It sends COUNT records whose value is BYTES of 'x' (the payload of every client), record i
// with the key i % K as decimal text when K > 0 (as `rekafka perf produce --keys K` and
// `franz produce -keys K`), as fast as send() takes them, at the producer's defaults apart from
// acks and compression.type (fixed by the workload; the defaults' partitioner hashes the key
// with murmur2), then flushes and prints the line of the other drivers:
//
//   records=N secs=S rec_per_s=R mb_per_s=M
//
// secs runs from the first send() to the end of flush(), so the JVM's start is not in it (it is
// in the harness's wall time). Exits 1 if any record failed.

import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.Properties;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;

public final class PeersProduce {
    public static void main(String[] argv) throws Exception {
        String bootstrap = System.getenv().getOrDefault("REKAFKA_BOOTSTRAP", "");
        String topic = "";
        String acks = null;
        String codec = null;
        long count = 1_000_000;
        int size = 100;
        int keys = 0;
        for (int i = 0; i + 1 < argv.length; i += 2) {
            switch (argv[i]) {
                case "-b": bootstrap = argv[i + 1]; break;
                case "-t": topic = argv[i + 1]; break;
                case "-n": count = Long.parseLong(argv[i + 1]); break;
                case "-s": size = Integer.parseInt(argv[i + 1]); break;
                case "-acks": acks = argv[i + 1]; break;
                case "-z": codec = argv[i + 1]; break;
                case "-keys": keys = Integer.parseInt(argv[i + 1]); break;
                default: throw new IllegalArgumentException("unknown argument " + argv[i]);
            }
        }
        if (bootstrap.isEmpty() || topic.isEmpty() || count <= 0 || size < 0 || keys < 0) {
            System.err.println("usage: PeersProduce -b BROKERS -t TOPIC -n COUNT(>0) -s BYTES [-acks all|1|0] [-z CODEC] [-keys K]");
            System.exit(2);
        }
        Properties pp = new Properties();
        pp.put("bootstrap.servers", bootstrap);
        if (acks != null) pp.put("acks", acks);
        if (codec != null) pp.put("compression.type", codec);
        pp.put("key.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        pp.put("value.serializer", "org.apache.kafka.common.serialization.ByteArraySerializer");
        byte[] value = new byte[size];
        Arrays.fill(value, (byte) 'x');
        byte[][] keyBytes = new byte[keys][];
        for (int k = 0; k < keys; k++) keyBytes[k] = Integer.toString(k).getBytes(StandardCharsets.US_ASCII);
        AtomicLong failed = new AtomicLong();
        AtomicReference<Exception> firstError = new AtomicReference<>();
        long start;
        double secs;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            start = System.nanoTime();
            for (long i = 0; i < count; i++) {
                byte[] key = keys > 0 ? keyBytes[(int) (i % keys)] : null;
                producer.send(new ProducerRecord<>(topic, key, value), (md, e) -> {
                    if (e != null && failed.incrementAndGet() == 1) firstError.set(e);
                });
            }
            producer.flush();
            secs = (System.nanoTime() - start) / 1e9;
        }
        if (failed.get() > 0) {
            System.err.println("error: " + failed.get() + " records failed; first: " + firstError.get());
            System.exit(1);
        }
        System.out.printf("records=%d secs=%.3f rec_per_s=%.0f mb_per_s=%.2f%n",
            count, secs, count / secs, count * (double) size / secs / 1e6);
    }
}
