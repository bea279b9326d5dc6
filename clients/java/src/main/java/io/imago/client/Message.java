package io.imago.client;

import io.imago.client.internal.Wire;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Objects;

/**
 * A message to send: topic, body, and optionally a tag, a key, properties, a flag and an
 * explicit partition. Immutable; build it with {@link #builder(String)}:
 *
 * <pre>{@code
 * Message m = Message.builder("orders")
 *         .body("hello")
 *         .tag("created")
 *         .key("order-42")          // stored as the property KEYS; drives key-hash partitioning
 *         .property("trace", "abc")
 *         .build();
 * }</pre>
 *
 * <p>On the wire the tag is the put's attribute (flag bit 0) and the properties, the key
 * included, form the properties block (flag bit 1); see protocol.md, "The put body".
 */
public final class Message {
    /** The property that holds a message's key, as in RocketMQ. */
    public static final String KEYS = "KEYS";

    private final String topic;
    private final byte[] body;
    private final String tag;
    private final Map<String, String> properties;
    private final int flag;
    private final Integer partition;

    private Message(Builder b) {
        this.topic = b.topic;
        this.body = b.body;
        this.tag = b.tag;
        this.properties = Collections.unmodifiableMap(new LinkedHashMap<>(b.properties));
        this.flag = b.flag;
        this.partition = b.partition;
    }

    /** A message with a body only. */
    public Message(String topic, byte[] body) {
        this(builder(topic).body(body));
    }

    /** A message with a tag (may be null) and a body, in RocketMQ's argument order. */
    public Message(String topic, String tag, byte[] body) {
        this(builder(topic).tag(tag).body(body));
    }

    /** A message with a tag and a key (either may be null) and a body, in RocketMQ's argument order. */
    public Message(String topic, String tag, String key, byte[] body) {
        this(builder(topic).tag(tag).key(key).body(body));
    }

    public static Builder builder(String topic) {
        return new Builder(topic);
    }

    public String getTopic() {
        return topic;
    }

    /** The payload; the array is shared, do not modify it. */
    public byte[] getBody() {
        return body;
    }

    /** The tag, or null. */
    public String getTag() {
        return tag;
    }

    /** The key (property {@value #KEYS}), or null. */
    public String getKey() {
        return properties.get(KEYS);
    }

    /** The properties in the order given, the key included; unmodifiable. */
    public Map<String, String> getProperties() {
        return properties;
    }

    /**
     * The flag as given. Bits 0 and 1 are managed by the client (tag and properties present);
     * the other bits are stored with the message as sent.
     */
    public int getFlag() {
        return flag;
    }

    /** The partition chosen by the caller, or null to let the producer's partitioner choose. */
    public Integer getPartition() {
        return partition;
    }

    @Override
    public String toString() {
        return "Message{topic=" + topic + ", tag=" + tag + ", properties=" + properties + ", flag=" + flag
                + ", partition=" + partition + ", body=" + body.length + " bytes}";
    }

    /** Builds a {@link Message}. */
    public static final class Builder {
        private final String topic;
        private byte[] body = new byte[0];
        private String tag;
        private final Map<String, String> properties = new LinkedHashMap<>();
        private int flag;
        private Integer partition;

        private Builder(String topic) {
            this.topic = Wire.checkName("topic", topic);
        }

        public Builder body(byte[] body) {
            this.body = Objects.requireNonNull(body, "body");
            return this;
        }

        /** The body as UTF-8. */
        public Builder body(String body) {
            return body(Objects.requireNonNull(body, "body").getBytes(StandardCharsets.UTF_8));
        }

        /** The tag (null for none); consumers can filter on it. */
        public Builder tag(String tag) {
            if (tag != null && tag.isEmpty()) {
                throw new IllegalArgumentException("a tag may not be empty (use null for no tag)");
            }
            this.tag = tag;
            return this;
        }

        /** The key (null for none), stored as the property {@value Message#KEYS}. */
        public Builder key(String key) {
            if (key == null) {
                properties.remove(KEYS);
                return this;
            }
            return property(KEYS, key);
        }

        /** A property; keys are non-empty, and neither keys nor values contain U+0001 or U+0002. */
        public Builder property(String name, String value) {
            Wire.checkProperty(name, value);
            properties.put(name, value);
            return this;
        }

        public Builder properties(Map<String, String> props) {
            props.forEach(this::property);
            return this;
        }

        /** User flag bits (bits 0 and 1 are set by the client). */
        public Builder flag(int flag) {
            this.flag = flag;
            return this;
        }

        /** Sends to this partition, whatever the producer's partitioner. */
        public Builder partition(int partition) {
            if (partition < 0) {
                throw new IllegalArgumentException("partition must be >= 0, got " + partition);
            }
            this.partition = partition;
            return this;
        }

        public Message build() {
            return new Message(this);
        }
    }
}
