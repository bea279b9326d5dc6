package io.imago.client;

import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicReference;
import java.util.function.BooleanSupplier;

/** Polls a consumer on a thread of its own and records what it receives. */
final class PollLoop implements AutoCloseable {
    final ImagoConsumer consumer;
    /** "partition:offset" to how often it was delivered. */
    final Map<String, Integer> seen;
    final AtomicInteger deliveries = new AtomicInteger();
    final AtomicReference<Throwable> error = new AtomicReference<>();
    private final Thread thread;
    private volatile boolean stop;

    /** @param shared where to record deliveries (shared by the members of a group to check coverage) */
    PollLoop(ConsumerConfig cfg, Map<String, Integer> shared) {
        this.consumer = new ImagoConsumer(cfg);
        this.seen = shared;
        this.thread = new Thread(this::run, "poll-loop-" + cfg.getMemberId());
        thread.setDaemon(true);
        thread.start();
    }

    PollLoop(ConsumerConfig cfg) {
        this(cfg, new ConcurrentHashMap<>());
    }

    private void run() {
        try {
            while (!stop) {
                List<ReceivedMessage> batch = consumer.poll(Duration.ofMillis(200));
                for (ReceivedMessage m : batch) {
                    seen.merge(key(m), 1, Integer::sum);
                    deliveries.incrementAndGet();
                }
            }
        } catch (Throwable t) {
            if (!stop) {
                error.set(t);
            }
        }
    }

    static String key(ReceivedMessage m) {
        return m.getPartition() + ":" + m.getOffset();
    }

    static String key(SendResult r) {
        return r.getPartition() + ":" + r.getOffset();
    }

    /** Waits until {@code cond} holds (or fails after {@code timeout}). */
    static void await(Duration timeout, String what, BooleanSupplier cond) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!cond.getAsBoolean()) {
            if (System.nanoTime() > deadline) {
                throw new AssertionError("timed out waiting for " + what);
            }
            Thread.sleep(20);
        }
    }

    static void awaitAll(Duration timeout, Map<String, Integer> seen, Set<String> expected) throws InterruptedException {
        await(timeout, "all " + expected.size() + " messages consumed", () -> seen.keySet().containsAll(expected));
    }

    /** Stops polling (the consumer stays open). */
    void stopPolling() throws InterruptedException {
        stop = true;
        thread.join(15_000);
    }

    @Override
    public void close() throws InterruptedException {
        stopPolling();
        consumer.close();
        if (error.get() != null) {
            throw new AssertionError("poll loop failed", error.get());
        }
    }
}
