package io.imago.client;

import io.imago.client.internal.Commands;
import io.imago.client.internal.Connection;
import io.imago.client.internal.Reply;
import io.imago.client.internal.Wire;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;

/**
 * Sends messages. Every put carries its checksum (the 7-token form), so the broker rejects a
 * body damaged on the way.
 *
 * <pre>{@code
 * try (ImagoProducer producer = new ImagoProducer("127.0.0.1:8123")) {
 *     SendResult r = producer.send(Message.builder("orders").body("hello").tag("created").build());
 *     producer.sendAsync(new Message("orders", "hi".getBytes()))
 *             .thenAccept(res -> System.out.println(res.getOffset()));
 *     producer.flush();
 * }
 * }</pre>
 *
 * <p>All sends share one connection; {@link #sendAsync(Message)} pipelines them (the replies
 * are matched by opaque), and the futures of one producer complete in the order of the replies,
 * on the producer's callback thread: do not block in a callback. Without failures, messages to
 * one partition are stored in the order they were sent. Thread-safe.
 */
public final class ImagoProducer implements AutoCloseable {
    private static final System.Logger LOG = System.getLogger("io.imago.client");
    private static final long RETRY_BACKOFF_MAX_MS = 2000;

    private final ProducerConfig cfg;
    private final Connection conn;
    private final ExecutorService callbacks;
    private final ScheduledExecutorService retrier;
    private final Semaphore inFlight;
    private final Set<CompletableFuture<SendResult>> pending = ConcurrentHashMap.newKeySet();
    private final Map<String, long[]> partitionCounts = new ConcurrentHashMap<>(); // topic -> {count, fetchedAtNanos}
    private volatile int defaultPartitions = -1;
    private volatile boolean closing;
    private volatile boolean closed;

    public ImagoProducer(String brokers) {
        this(ProducerConfig.builder(brokers).build());
    }

    public ImagoProducer(ProducerConfig config) {
        this.cfg = Objects.requireNonNull(config, "config");
        this.conn = new Connection(cfg.connection, "producer");
        this.callbacks = Executors.newSingleThreadExecutor(daemon("imago-producer-callbacks"));
        this.retrier = Executors.newSingleThreadScheduledExecutor(daemon("imago-producer-retry"));
        this.inFlight = new Semaphore(cfg.maxInFlight);
    }

    private static java.util.concurrent.ThreadFactory daemon(String name) {
        return r -> {
            Thread t = new Thread(r, name);
            t.setDaemon(true);
            return t;
        };
    }

    /** Sends a message and waits for the broker's reply; throws the broker's error as an {@link ImagoException}. */
    public SendResult send(Message message) {
        return Connection.await(sendAsync(message));
    }

    /**
     * Sends a message without waiting. The future completes with the {@link SendResult}, or
     * exceptionally with an {@link ImagoException} once retries are exhausted. Blocks only while
     * {@code maxInFlight} sends are pending, while fetching a topic's partition count for the
     * partitioner, or while reconnecting.
     */
    public CompletableFuture<SendResult> sendAsync(Message message) {
        Objects.requireNonNull(message, "message");
        if (closing) {
            throw new IllegalStateException("the producer is closed");
        }
        CompletableFuture<SendResult> result = new CompletableFuture<>();
        try {
            if (!inFlight.tryAcquire(cfg.connection.requestTimeoutMs, TimeUnit.MILLISECONDS)) {
                result.completeExceptionally(new ImagoTimeoutException(
                        "more than maxInFlight " + cfg.maxInFlight + " sends pending for "
                                + cfg.connection.requestTimeoutMs + " ms"));
                return result;
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            result.completeExceptionally(new ImagoConnectionException("interrupted", e));
            return result;
        }
        pending.add(result);
        result.whenComplete((r, e) -> {
            pending.remove(result);
            inFlight.release();
        });
        try {
            int partition = choosePartition(message);
            byte[] props = Wire.propertiesBlock(message.getProperties());
            byte[] body = Wire.putBody(message.getTag(), props, message.getBody());
            int flag = Wire.putFlag(message.getFlag(), message.getTag() != null, props != null);
            String line = "put " + message.getTopic() + " " + partition + " " + body.length + " " + flag + " "
                    + Wire.putChecksum(body);
            attempt(message.getTopic(), line, body, 0, result);
        } catch (RuntimeException e) {
            result.completeExceptionally(e);
        }
        return result;
    }

    private void attempt(String topic, String line, byte[] body, int attemptNo, CompletableFuture<SendResult> result) {
        conn.send(line, body).whenComplete((reply, err) -> {
            Runnable r = () -> onReply(topic, line, body, attemptNo, result, reply, err);
            try {
                callbacks.execute(r);
            } catch (RejectedExecutionException e) {
                r.run();
            }
        });
    }

    private void onReply(String topic, String line, byte[] body, int attemptNo, CompletableFuture<SendResult> result,
            Reply reply, Throwable err) {
        ImagoException ex;
        if (err == null && reply.code() == 200) {
            try {
                String[] t = reply.text().trim().split(" ");
                result.complete(new SendResult(Long.parseUnsignedLong(t[0]), Integer.parseInt(t[1]),
                        Long.parseUnsignedLong(t[2])));
            } catch (RuntimeException e) {
                result.completeExceptionally(new ImagoProtocolException("bad put reply '" + reply.text() + "'", e));
            }
            return;
        } else if (err == null) {
            ex = reply.isValue() ? new ImagoProtocolException("value reply to a put") : reply.toException();
            if (ex.getCode() == 400 && ex.getMessage().startsWith("partition ")) {
                partitionCounts.remove(topic);
            }
        } else {
            ex = Connection.unwrap(err);
        }
        if (ex.isRetriable() && attemptNo < cfg.retries && !closed) {
            long backoff = Math.min(cfg.retryBackoffMs << Math.min(attemptNo, 20), RETRY_BACKOFF_MAX_MS);
            LOG.log(System.Logger.Level.DEBUG, "imago producer: retry {0} of ''{1}'' in {2} ms after {3}",
                    attemptNo + 1, line, backoff, ex);
            try {
                retrier.schedule(() -> attempt(topic, line, body, attemptNo + 1, result), backoff,
                        TimeUnit.MILLISECONDS);
                return;
            } catch (RejectedExecutionException e) {
                // closed meanwhile: fail below
            }
        }
        result.completeExceptionally(ex);
    }

    private int choosePartition(Message m) {
        if (m.getPartition() != null) {
            return m.getPartition();
        }
        Partitioner p = cfg.partitioner;
        int n = p.needsPartitionCount(m) ? partitionsFor(m.getTopic()) : 0;
        int chosen = p.partition(m, n);
        if (chosen < -1 || (n > 0 && chosen >= n)) {
            throw new IllegalArgumentException("partitioner " + p + " chose partition " + chosen + " of " + n);
        }
        return chosen;
    }

    /**
     * The partition count of a topic (cached for {@code metadataMaxAge}). For a topic that does
     * not exist yet, the broker's {@code default_partitions}: what the first put will create.
     */
    public int partitionsFor(String topic) {
        Wire.checkName("topic", topic);
        long now = System.nanoTime();
        long[] cached = partitionCounts.get(topic);
        if (cached != null && now - cached[1] < TimeUnit.MILLISECONDS.toNanos(cfg.metadataMaxAgeMs)) {
            return (int) cached[0];
        }
        int n = Commands.partitionCount(conn, topic);
        if (n > 0) {
            partitionCounts.put(topic, new long[] {n, now});
            return n;
        }
        int d = defaultPartitions;
        if (d <= 0) {
            d = Commands.defaultPartitions(conn);
            defaultPartitions = d;
        }
        return d;
    }

    /** Waits until every send made so far has completed (successfully or not). */
    public void flush() {
        List<CompletableFuture<SendResult>> snapshot = new ArrayList<>(pending);
        for (CompletableFuture<SendResult> f : snapshot) {
            try {
                f.join();
            } catch (RuntimeException ignored) {
                // the caller sees it through its future
            }
        }
    }

    /** The connection, for tests ({@link Connection#closeSocket()}) and diagnostics. */
    Connection connection() {
        return conn;
    }

    /** Flushes (waiting at most 30 s), then closes the connection. */
    @Override
    public void close() {
        close(Duration.ofSeconds(30));
    }

    /** Flushes for at most {@code timeout}; sends still pending then fail with {@link ImagoConnectionException}. */
    public void close(Duration timeout) {
        if (closed) {
            return;
        }
        closing = true;
        List<CompletableFuture<SendResult>> snapshot = new ArrayList<>(pending);
        try {
            CompletableFuture.allOf(snapshot.toArray(new CompletableFuture<?>[0]))
                    .get(timeout.toMillis(), TimeUnit.MILLISECONDS);
        } catch (TimeoutException | java.util.concurrent.ExecutionException e) {
            // failures are reported through the futures; stragglers are failed below
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        closed = true;
        retrier.shutdownNow();
        conn.close();
        for (CompletableFuture<SendResult> f : new ArrayList<>(pending)) {
            f.completeExceptionally(new ImagoConnectionException("the producer was closed before the reply"));
        }
        callbacks.shutdown();
    }
}
