package io.imago.client;

import io.imago.client.internal.ConnectionOptions;
import io.imago.client.internal.Wire;
import java.net.InetAddress;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Objects;
import java.util.concurrent.ThreadLocalRandom;

/**
 * Settings of an {@link ImagoConsumer}.
 *
 * <pre>{@code
 * ConsumerConfig cfg = ConsumerConfig.builder("127.0.0.1:8123", "billing", "orders")
 *         .mode(ConsumeMode.CLUSTER)
 *         .start(StartPosition.EARLIEST)
 *         .tags("created", "paid")
 *         .build();
 * }</pre>
 */
public final class ConsumerConfig {
    final ConnectionOptions connection;
    final String group;
    final String topic;
    final ConsumeMode mode;
    final String memberId;
    final List<String> tags;
    final StartPosition start;
    final Long startOffset;
    final Long startTimeMs;
    final boolean autoCommit;
    final long autoCommitIntervalMs;
    final long pollWaitMs;
    final int fetchMaxBytes;
    final int consumeBatchSize;
    final long reconsumeDelayMs;

    private ConsumerConfig(Builder b) {
        this.connection = new ConnectionOptions(ConnectionOptions.parseBrokers(b.brokers), b.connectTimeoutMs,
                b.requestTimeoutMs, b.reconnectBackoffMs, b.reconnectBackoffMaxMs);
        this.group = Wire.checkName("group", b.group);
        this.topic = Wire.checkName("topic", b.topic);
        this.mode = b.mode;
        this.memberId = b.memberId != null ? Wire.checkName("member", b.memberId) : defaultMemberId();
        this.tags = Collections.unmodifiableList(new ArrayList<>(b.tags));
        this.start = b.start;
        if (b.startOffset != null && b.startTimeMs != null) {
            throw new IllegalArgumentException("set startOffset or startTimeMs, not both");
        }
        this.startOffset = b.startOffset;
        this.startTimeMs = b.startTimeMs;
        this.autoCommit = b.autoCommit;
        this.autoCommitIntervalMs = b.autoCommitIntervalMs;
        this.pollWaitMs = b.pollWaitMs;
        this.fetchMaxBytes = b.fetchMaxBytes;
        this.consumeBatchSize = b.consumeBatchSize;
        this.reconsumeDelayMs = b.reconsumeDelayMs;
    }

    public String getGroup() {
        return group;
    }

    public String getTopic() {
        return topic;
    }

    public ConsumeMode getMode() {
        return mode;
    }

    public String getMemberId() {
        return memberId;
    }

    public List<String> getTags() {
        return tags;
    }

    /** {@code <host>-<pid>-<random>}, the host name cut down to the name grammar. */
    static String defaultMemberId() {
        String host;
        try {
            host = InetAddress.getLocalHost().getHostName();
        } catch (Exception e) {
            host = "host";
        }
        StringBuilder sb = new StringBuilder();
        for (char c : host.toCharArray()) {
            boolean ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
                    || c == '.' || c == '-';
            sb.append(ok ? c : '_');
        }
        while (sb.length() > 0 && (sb.charAt(0) == '.' || sb.charAt(0) == '-')) {
            sb.deleteCharAt(0);
        }
        if (sb.length() == 0) {
            sb.append("host");
        }
        if (sb.length() > 200) {
            sb.setLength(200);
        }
        return sb + "-" + ProcessHandle.current().pid() + "-"
                + String.format("%08x", ThreadLocalRandom.current().nextInt());
    }

    /**
     * @param brokers {@code host:port[,host:port]...}
     * @param group the consumer group
     * @param topic the topic to consume
     */
    public static Builder builder(String brokers, String group, String topic) {
        return new Builder(brokers, group, topic);
    }

    public static final class Builder {
        private final String brokers;
        private final String group;
        private final String topic;
        private ConsumeMode mode = ConsumeMode.CLUSTER;
        private String memberId;
        private final List<String> tags = new ArrayList<>();
        private StartPosition start = StartPosition.EARLIEST;
        private Long startOffset;
        private Long startTimeMs;
        private boolean autoCommit = true;
        private long autoCommitIntervalMs = 1000;
        private long pollWaitMs = 5000;
        private int fetchMaxBytes = 256 * 1024;
        private int consumeBatchSize = 32;
        private long reconsumeDelayMs = 1000;
        private long connectTimeoutMs = 3000;
        private long requestTimeoutMs = 5000;
        private long reconnectBackoffMs = 50;
        private long reconnectBackoffMaxMs = 1000;

        private Builder(String brokers, String group, String topic) {
            this.brokers = brokers;
            this.group = group;
            this.topic = topic;
        }

        /** CLUSTER (default) or BROADCAST. */
        public Builder mode(ConsumeMode mode) {
            this.mode = Objects.requireNonNull(mode, "mode");
            return this;
        }

        /**
         * This member's id (default {@code <host>-<pid>-<random>}). Give broadcast members a
         * stable id: their offsets are kept per member.
         */
        public Builder memberId(String id) {
            this.memberId = id;
            return this;
        }

        /** Only messages with one of these tags (default: every message). */
        public Builder tags(String... tags) {
            return tags(List.of(tags));
        }

        public Builder tags(List<String> tags) {
            this.tags.clear();
            for (String t : tags) {
                this.tags.add(Wire.checkFilterTag(t));
            }
            if (this.tags.size() > 32) {
                throw new IllegalArgumentException("at most 32 tags");
            }
            return this;
        }

        /** Where partitions without a committed offset begin (default EARLIEST). */
        public Builder start(StartPosition start) {
            this.start = Objects.requireNonNull(start, "start");
            return this;
        }

        /**
         * Moves the group's committed offsets of every partition to {@code offset} (clamped into
         * each partition's range) with {@code reset} when the consumer starts. This rewinds the
         * whole group.
         */
        public Builder startOffset(long offset) {
            if (offset < 0) {
                throw new IllegalArgumentException("startOffset must be >= 0");
            }
            this.startOffset = offset;
            return this;
        }

        /**
         * Moves the group's committed offsets to the first message stored at or after
         * {@code unixMs} with {@code reset @<unixMs>} when the consumer starts. This rewinds the
         * whole group.
         */
        public Builder startTimeMs(long unixMs) {
            this.startTimeMs = unixMs;
            return this;
        }

        /** Commit consumed offsets automatically (default true), at most every {@code autoCommitInterval}. */
        public Builder autoCommit(boolean on) {
            this.autoCommit = on;
            return this;
        }

        /** Default 1 s. */
        public Builder autoCommitInterval(Duration d) {
            this.autoCommitIntervalMs = d.toMillis();
            return this;
        }

        /**
         * How long the broker holds a get when the consumer is caught up (the long-poll
         * {@code waitMs}; default 5 s, the broker clamps it to its {@code wait_ms_max}). Also the
         * poll timeout of the consume thread.
         */
        public Builder pollWait(Duration d) {
            this.pollWaitMs = Math.max(0, d.toMillis());
            return this;
        }

        /** Most record bytes per get and partition (default 256 KiB; the first record always comes whole). */
        public Builder fetchMaxBytes(int n) {
            if (n <= 0) {
                throw new IllegalArgumentException("fetchMaxBytes must be positive");
            }
            this.fetchMaxBytes = n;
            return this;
        }

        /** Most messages per listener call (default 32). */
        public Builder consumeBatchSize(int n) {
            if (n <= 0) {
                throw new IllegalArgumentException("consumeBatchSize must be positive");
            }
            this.consumeBatchSize = n;
            return this;
        }

        /** Wait before a batch the listener refused is delivered again (default 1 s). */
        public Builder reconsumeDelay(Duration d) {
            this.reconsumeDelayMs = d.toMillis();
            return this;
        }

        /** Timeout of each request other than the long-poll wait (default 5 s). */
        public Builder requestTimeout(Duration d) {
            this.requestTimeoutMs = d.toMillis();
            return this;
        }

        public Builder connectTimeout(Duration d) {
            this.connectTimeoutMs = d.toMillis();
            return this;
        }

        public Builder reconnectBackoff(Duration initial, Duration max) {
            this.reconnectBackoffMs = initial.toMillis();
            this.reconnectBackoffMaxMs = max.toMillis();
            return this;
        }

        public ConsumerConfig build() {
            return new ConsumerConfig(this);
        }
    }
}
