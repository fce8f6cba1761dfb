package rekafka.spring;

import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.Map;

import org.apache.kafka.common.errors.SerializationException;
import org.apache.kafka.common.serialization.Deserializer;

/**
 * The error types a scenario's listener throws. Their simple names are the names used in the
 * scenario files and match the Rust runner's error types, so the comparator can line up
 * {@code kafka_dlt-exception-*-fqcn} headers by their last path segment.
 */
public final class Errors {

    private Errors() {
    }

    /** A retryable failure (retryable by default classification). */
    public static class Transient extends RuntimeException {
        public Transient(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** Classified not retryable by the scenarios that say so. */
    public static class Fatal extends RuntimeException {
        public Fatal(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** A wrapper: the classification must look through it to its cause. */
    public static class Wrapper extends RuntimeException {
        public Wrapper(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** Gets its own back-off in the back-off-per-error scenarios. */
    public static class Slow extends RuntimeException {
        public Slow(String message, Throwable cause) {
            super(message, cause);
        }
    }

    /** The recoverer's own failure (a recoverer that fails). */
    public static class RecovererDown extends RuntimeException {
        public RecovererDown(String message) {
            super(message);
        }
    }

    /** Builds the error a scenario names; "Plain" is a bare RuntimeException. */
    public static RuntimeException make(String kind, String message, Throwable cause) {
        switch (kind) {
            case "Transient":
                return new Transient(message, cause);
            case "Fatal":
                return new Fatal(message, cause);
            case "Wrapper":
                return new Wrapper(message, cause);
            case "Slow":
                return new Slow(message, cause);
            case "Plain":
                return new RuntimeException(message, cause);
            default:
                throw new IllegalArgumentException("unknown error kind " + kind);
        }
    }

    public static Class<? extends Throwable> classOf(String kind) {
        switch (kind) {
            case "Transient":
                return Transient.class;
            case "Fatal":
                return Fatal.class;
            case "Wrapper":
                return Wrapper.class;
            case "Slow":
                return Slow.class;
            default:
                throw new IllegalArgumentException("unknown error kind " + kind);
        }
    }

    /** Serializes byte arrays as they are and anything else as its UTF-8 string. */
    public static class BytesOrStringSerializer implements org.apache.kafka.common.serialization.Serializer<Object> {
        @Override
        public byte[] serialize(String topic, Object data) {
            if (data == null) {
                return null;
            }
            if (data instanceof byte[] b) {
                return b;
            }
            return data.toString().getBytes(StandardCharsets.UTF_8);
        }
    }

    /**
     * A String deserializer that rejects invalid UTF-8 (Kafka's own StringDeserializer replaces
     * bad bytes instead of failing), as rekafka's StringDeserializer does.
     */
    public static class StrictUtf8Deserializer implements Deserializer<String> {
        private boolean isKey;

        @Override
        public void configure(Map<String, ?> configs, boolean isKey) {
            this.isKey = isKey;
        }

        @Override
        public String deserialize(String topic, byte[] data) {
            if (data == null) {
                return null;
            }
            try {
                return StandardCharsets.UTF_8.newDecoder()
                        .onMalformedInput(CodingErrorAction.REPORT)
                        .onUnmappableCharacter(CodingErrorAction.REPORT)
                        .decode(ByteBuffer.wrap(data))
                        .toString();
            } catch (CharacterCodingException e) {
                throw new SerializationException((isKey ? "key" : "value") + " is not valid UTF-8", e);
            }
        }
    }
}
