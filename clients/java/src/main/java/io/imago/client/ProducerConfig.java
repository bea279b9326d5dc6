package io.imago.client;

import io.imago.client.internal.ConnectionOptions;
import java.time.Duration;
import java.util.Objects;

/**
 * Settings of an {@link ImagoProducer}.
 *
 * <pre>{@code
 * ProducerConfig cfg = ProducerConfig.builder("127.0.0.1:8123")
 *         .partitioner(Partitioner.KEY_HASH)
 *         .requestTimeout(Duration.ofSeconds(5))
 *         .build();
 * }</pre>
 */
public final class ProducerConfig {
    final ConnectionOptions connection;
    final Partitioner partitioner;
    final int retries;
    final long retryBackoffMs;
    final int maxInFlight;
    final long metadataMaxAgeMs;

    private ProducerConfig(Builder b) {
        this.connection = new ConnectionOptions(ConnectionOptions.parseBrokers(b.brokers), b.connectTimeoutMs,
                b.requestTimeoutMs, b.reconnectBackoffMs, b.reconnectBackoffMaxMs);
        this.partitioner = b.partitioner;
        this.retries = b.retries;
        this.retryBackoffMs = b.retryBackoffMs;
        this.maxInFlight = b.maxInFlight;
        this.metadataMaxAgeMs = b.metadataMaxAgeMs;
    }

    /** @param brokers {@code host:port[,host:port]...}; further addresses are tried when one fails */
    public static Builder builder(String brokers) {
        return new Builder(brokers);
    }

    public static final class Builder {
        private final String brokers;
        private long connectTimeoutMs = 3000;
        private long requestTimeoutMs = 5000;
        private long reconnectBackoffMs = 50;
        private long reconnectBackoffMaxMs = 1000;
        private Partitioner partitioner = Partitioner.ROUND_ROBIN;
        private int retries = 3;
        private long retryBackoffMs = 100;
        private int maxInFlight = 10000;
        private long metadataMaxAgeMs = 30000;

        private Builder(String brokers) {
            this.brokers = brokers;
        }

        /** How long one attempt may take, reconnecting included (default 5 s). */
        public Builder requestTimeout(Duration d) {
            this.requestTimeoutMs = d.toMillis();
            return this;
        }

        /** TCP connect timeout (default 3 s). */
        public Builder connectTimeout(Duration d) {
            this.connectTimeoutMs = d.toMillis();
            return this;
        }

        /** First wait before reconnecting after a failed connect, doubled up to {@code max} (default 50 ms, 1 s). */
        public Builder reconnectBackoff(Duration initial, Duration max) {
            this.reconnectBackoffMs = initial.toMillis();
            this.reconnectBackoffMaxMs = max.toMillis();
            return this;
        }

        /** The partitioner for messages without an explicit partition (default {@link Partitioner#ROUND_ROBIN}). */
        public Builder partitioner(Partitioner p) {
            this.partitioner = Objects.requireNonNull(p, "partitioner");
            return this;
        }

        /**
         * How often a send is repeated after a retriable failure (connection lost, timeout, 500,
         * 503); default 3. A repeated put may be stored twice (at-least-once), and repeated async
         * sends may land out of order.
         */
        public Builder retries(int n) {
            if (n < 0) {
                throw new IllegalArgumentException("retries must be >= 0");
            }
            this.retries = n;
            return this;
        }

        /** Wait before the first retry, doubled for each further one up to 2 s (default 100 ms). */
        public Builder retryBackoff(Duration d) {
            this.retryBackoffMs = d.toMillis();
            return this;
        }

        /** Most sends awaiting their reply; {@code sendAsync} blocks beyond it (default 10000). */
        public Builder maxInFlight(int n) {
            if (n <= 0) {
                throw new IllegalArgumentException("maxInFlight must be positive");
            }
            this.maxInFlight = n;
            return this;
        }

        /** How long a topic's partition count is cached for the partitioner (default 30 s). */
        public Builder metadataMaxAge(Duration d) {
            this.metadataMaxAgeMs = d.toMillis();
            return this;
        }

        public ProducerConfig build() {
            return new ProducerConfig(this);
        }
    }
}
