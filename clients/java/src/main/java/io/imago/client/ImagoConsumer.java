package io.imago.client;

import io.imago.client.internal.Connection;
import io.imago.client.internal.Reply;
import io.imago.client.internal.Wire;
import java.time.Duration;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.NoSuchElementException;
import java.util.Objects;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;

/**
 * A member of a consumer group on one topic.
 *
 * <p>Pull style, as Kafka's consumer:
 *
 * <pre>{@code
 * try (ImagoConsumer consumer = new ImagoConsumer(
 *         ConsumerConfig.builder("127.0.0.1:8123", "billing", "orders").build())) {
 *     while (running) {
 *         for (ReceivedMessage m : consumer.poll(Duration.ofSeconds(1))) {
 *             handle(m);
 *         }
 *     }
 * }
 * }</pre>
 *
 * <p>Or iterate: {@code for (ReceivedMessage m : consumer)} blocks until messages arrive and
 * ends when the consumer is closed (see {@link #iterator()}).
 *
 * <p>Push style, as RocketMQ's push consumer:
 *
 * <pre>{@code
 * ImagoConsumer consumer = new ImagoConsumer(cfg);
 * consumer.registerListener(msgs -> { msgs.forEach(this::handle); return ConsumeStatus.CONSUME_SUCCESS; });
 * consumer.start();
 * ...
 * consumer.close();
 * }</pre>
 *
 * <p>How it works: the first poll (or {@link #start()}) joins the group ({@code join}); a
 * background thread sends a {@code heartbeat} every third of the broker's session timeout and
 * learns the member's assignment (generation, partitions, start offsets) from the replies. Gets
 * for all owned partitions are long polls pipelined on one connection, one in flight per
 * partition, and their replies are matched by opaque. Records are CRC-checked.
 *
 * <p>Offsets: a poll advances the position of each partition past the records it returns. With
 * auto-commit (the default) positions are committed at most every {@code autoCommitInterval}
 * at the start of a poll, on a rebalance (for partitions kept) and on close, so a message
 * returned by poll counts as processed when the next poll begins: at-least-once delivery. A
 * partition moving to another member is re-read by it from the last commit.
 *
 * <p>Rebalances: on a new generation the consumer commits its consumed offsets of the
 * partitions it keeps, drops the ones it lost, and starts the new ones at their committed
 * offsets. When the broker's committed offset of a kept partition is no longer the one this
 * consumer committed ({@code reset}, or another member committed meanwhile), it continues from
 * the broker's offset. {@code 409 unknown member} (expired, broker restarted) makes it join
 * again; {@code 409} on a commit suspends that partition until the next assignment.
 *
 * <p>{@link #poll}, {@link #commitSync()} and {@link #seek} are meant for one thread (with a
 * listener: the consume thread); {@link #close()} may be called from any thread.
 */
public final class ImagoConsumer implements AutoCloseable, Iterable<ReceivedMessage> {
    private static final System.Logger LOG = System.getLogger("io.imago.client");
    private static final long HEARTBEAT_NOW_MIN_GAP_MS = 250;

    private final ConsumerConfig cfg;
    private final String member;
    private final Connection control;
    private final Connection fetcher;
    private final String tagsToken;
    private final Set<String> tagSet;
    private final ReentrantLock pollLock = new ReentrantLock();
    private final Object monitor = new Object();
    private final AtomicLong signals = new AtomicLong();
    private final AtomicBoolean closed = new AtomicBoolean();

    // Written by join and heartbeat replies (any thread), applied by the poll thread.
    private volatile Assignment latest;
    private final AtomicLong assignmentSeq = new AtomicLong();
    private volatile long sessionTimeoutMs = 10000;
    private volatile boolean joined;
    private final Object heartbeatMonitor = new Object();
    private boolean heartbeatRequested; // guarded by heartbeatMonitor
    private volatile long lastHeartbeatRequestNanos;
    /** Set by a 409 on commit: the next heartbeat's assignment is applied even in the same generation. */
    private volatile boolean republish;
    private boolean refreshing; // guarded by pollLock
    private Thread heartbeatThread;

    // Poll-thread state, guarded by pollLock.
    private long appliedSeq;
    private long generation = -1;
    private final TreeMap<Integer, PartitionState> owned = new TreeMap<>();
    private final Map<Integer, PartitionState> suspended = new HashMap<>();
    private long lastAutoCommitNanos = System.nanoTime();
    private long joinRetryAtNanos;
    private long fetchBlockedUntilNanos = System.nanoTime();
    /** Fetched by the iterator and not handed out yet (guarded by pollLock). */
    private final ArrayDeque<ReceivedMessage> unhanded = new ArrayDeque<>();

    private volatile MessageListener listener;
    private Thread consumeThread;

    public ImagoConsumer(ConsumerConfig config) {
        this.cfg = Objects.requireNonNull(config, "config");
        this.member = cfg.memberId;
        this.control = new Connection(cfg.connection, "consumer-control-" + member);
        this.fetcher = new Connection(cfg.connection, "consumer-fetch-" + member);
        this.tagsToken = cfg.tags.isEmpty() ? null : String.join("||", cfg.tags);
        this.tagSet = cfg.tags.isEmpty() ? null : new HashSet<>(cfg.tags);
    }

    /** The member id this consumer joins with. */
    public String memberId() {
        return member;
    }

    /** The partitions this consumer owns in the generation it has applied. */
    public Set<Integer> assignment() {
        pollLock.lock();
        try {
            return Collections.unmodifiableSet(new TreeSet<>(owned.keySet()));
        } finally {
            pollLock.unlock();
        }
    }

    /** The group generation this consumer has applied, -1 before joining. */
    public long generation() {
        pollLock.lock();
        try {
            return generation;
        } finally {
            pollLock.unlock();
        }
    }

    /** The next offset this consumer will read from an owned partition. */
    public long position(int partition) {
        pollLock.lock();
        try {
            return state(partition).position;
        } finally {
            pollLock.unlock();
        }
    }

    /**
     * Waits up to {@code timeout} for messages of the owned partitions and returns those that
     * arrived (possibly none). Joins the group on the first call. Throws
     * {@link ConflictException} when the group is in the other mode, and other
     * {@link ImagoException}s the broker answers a join with; connection failures are retried.
     */
    public List<ReceivedMessage> poll(Duration timeout) {
        Objects.requireNonNull(timeout, "timeout");
        pollLock.lock();
        try {
            if (closed.get()) {
                throw new IllegalStateException("the consumer is closed");
            }
            if (!unhanded.isEmpty()) {
                List<ReceivedMessage> rest = new ArrayList<>(unhanded);
                unhanded.clear();
                return rest;
            }
            long deadline = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(Math.max(0, timeout.toMillis()));
            List<ReceivedMessage> out = new ArrayList<>();
            while (!closed.get()) {
                long seen = signals.get();
                long now = System.nanoTime();
                if (!joined) {
                    if (now - joinRetryAtNanos >= 0) {
                        tryJoin();
                    }
                    if (!joined) {
                        if (deadline - System.nanoTime() <= 0) {
                            return out;
                        }
                        waitSignal(seen, joinRetryAtNanos - deadline < 0 ? joinRetryAtNanos : deadline);
                        continue;
                    }
                }
                applyAssignment();
                maybeAutoCommit();
                collect(out);
                issueGets(deadline);
                now = System.nanoTime();
                if (!out.isEmpty() || deadline - now <= 0) {
                    return out;
                }
                waitSignal(seen, nextWakeup(deadline));
            }
            return out;
        } finally {
            pollLock.unlock();
        }
    }

    /**
     * The messages of the owned partitions, one at a time: {@code hasNext()} long-polls (joining
     * the group on first use) until a message arrives, and returns false once the consumer is
     * closed, so {@code for (ReceivedMessage m : consumer)} runs until {@link #close()} (or a
     * {@code break}). Offsets are committed as with {@link #poll}: a message counts as consumed
     * once {@code next()} returned it; messages fetched but not yet returned are not committed
     * (close rewinds to them), so breaking out of the loop loses nothing. Use from one thread.
     */
    @Override
    public Iterator<ReceivedMessage> iterator() {
        return new Iterator<>() {
            @Override
            public boolean hasNext() {
                pollLock.lock();
                try {
                    while (unhanded.isEmpty()) {
                        if (closed.get()) {
                            return false;
                        }
                        List<ReceivedMessage> batch;
                        try {
                            batch = poll(Duration.ofMillis(Math.max(100, cfg.pollWaitMs)));
                        } catch (IllegalStateException e) {
                            if (closed.get()) {
                                return false;
                            }
                            throw e;
                        }
                        unhanded.addAll(batch);
                    }
                    return true;
                } finally {
                    pollLock.unlock();
                }
            }

            @Override
            public ReceivedMessage next() {
                pollLock.lock();
                try {
                    if (!hasNext()) {
                        throw new NoSuchElementException("the consumer is closed");
                    }
                    return unhanded.poll();
                } finally {
                    pollLock.unlock();
                }
            }
        };
    }

    /**
     * Moves positions back to the first message fetched but not handed out (poll thread), so
     * that a commit does not cover them. {@code drop}: forget them (they are fetched again);
     * otherwise (close) an iterator still running may hand them out, uncommitted.
     */
    private void rewindUnhanded(boolean drop) {
        Map<Integer, Long> first = new HashMap<>();
        for (ReceivedMessage m : unhanded) {
            first.merge(m.getPartition(), m.getOffset(), Math::min);
        }
        if (drop) {
            unhanded.clear();
        }
        for (Map.Entry<Integer, Long> e : first.entrySet()) {
            PartitionState st = owned.get(e.getKey());
            if (st != null && e.getValue() < st.position) {
                st.position = e.getValue();
                st.inflight = null;
            }
        }
    }

    /**
     * Commits the current position of every owned partition (the next offset to consume) and
     * waits for the replies. Throws the first error after trying every partition;
     * {@link ConflictException} when a partition is no longer owned (it is then suspended until
     * the next assignment).
     */
    public void commitSync() {
        pollLock.lock();
        try {
            if (closed.get()) {
                throw new IllegalStateException("the consumer is closed");
            }
            if (!joined) {
                return;
            }
            rewindUnhanded(true); // what the iterator has not handed out is not consumed yet
            applyAssignment();
            List<PartitionState> dirty = new ArrayList<>();
            for (PartitionState st : owned.values()) {
                if (st.position != st.committed) {
                    dirty.add(st);
                }
            }
            commit(dirty, true, cfg.connection.requestTimeoutMs);
        } finally {
            pollLock.unlock();
        }
    }

    /**
     * Moves an owned partition to {@code offset}: the next poll reads from there (the next
     * commit stores it). Throws {@link IllegalStateException} for a partition not owned.
     */
    public void seek(int partition, long offset) {
        if (offset < 0) {
            throw new IllegalArgumentException("offset must be >= 0");
        }
        pollLock.lock();
        try {
            PartitionState st = state(partition);
            unhanded.removeIf(m -> m.getPartition() == partition);
            st.position = offset;
            st.inflight = null;
            st.retryAtNanos = 0;
        } finally {
            pollLock.unlock();
        }
    }

    private PartitionState state(int partition) {
        PartitionState st = owned.get(partition);
        if (st == null) {
            throw new IllegalStateException("partition " + partition + " is not assigned to " + member);
        }
        return st;
    }

    /** Sets the listener that {@link #start()} feeds. */
    public void registerListener(MessageListener listener) {
        this.listener = Objects.requireNonNull(listener, "listener");
    }

    /**
     * Joins the group and starts the consume thread, which polls and hands batches to the
     * listener. Throws what the join throws (a missing topic is not an error: the consumer
     * waits for it). The consume thread is a daemon: keep the application running and call
     * {@link #close()} to stop.
     */
    public synchronized void start() {
        if (listener == null) {
            throw new IllegalStateException("registerListener first");
        }
        if (consumeThread != null) {
            throw new IllegalStateException("already started");
        }
        if (closed.get()) {
            throw new IllegalStateException("the consumer is closed");
        }
        pollLock.lock();
        try {
            if (!joined) {
                tryJoin();
            }
        } finally {
            pollLock.unlock();
        }
        consumeThread = new Thread(this::consumeLoop, "imago-consume-" + member);
        consumeThread.setDaemon(true);
        consumeThread.start();
    }

    private void consumeLoop() {
        while (!closed.get()) {
            List<ReceivedMessage> batch;
            try {
                batch = poll(Duration.ofMillis(Math.max(100, cfg.pollWaitMs)));
            } catch (IllegalStateException e) {
                break;
            } catch (RuntimeException e) {
                LOG.log(System.Logger.Level.WARNING, "imago consumer " + member + ": poll failed", e);
                pause(1000);
                continue;
            }
            for (int i = 0; i < batch.size() && !closed.get(); i += cfg.consumeBatchSize) {
                List<ReceivedMessage> chunk = batch.subList(i, Math.min(batch.size(), i + cfg.consumeBatchSize));
                ConsumeStatus status;
                try {
                    status = listener.consume(Collections.unmodifiableList(chunk));
                } catch (Throwable t) {
                    LOG.log(System.Logger.Level.WARNING, "imago consumer " + member + ": listener threw", t);
                    status = ConsumeStatus.RECONSUME_LATER;
                }
                if (status != ConsumeStatus.CONSUME_SUCCESS) {
                    Map<Integer, Long> first = new HashMap<>();
                    for (ReceivedMessage m : batch.subList(i, batch.size())) {
                        first.merge(m.getPartition(), m.getOffset(), Math::min);
                    }
                    for (Map.Entry<Integer, Long> e : first.entrySet()) {
                        try {
                            seek(e.getKey(), e.getValue());
                        } catch (IllegalStateException lost) {
                            // no longer ours: its new owner reads it from the last commit
                        }
                    }
                    pause(cfg.reconsumeDelayMs);
                    break;
                }
            }
        }
    }

    private void pause(long ms) {
        long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(ms);
        synchronized (monitor) {
            while (!closed.get()) {
                long left = until - System.nanoTime();
                if (left <= 0) {
                    return;
                }
                try {
                    monitor.wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    return;
                }
            }
        }
    }

    // ---- membership -------------------------------------------------------------------------

    /** The first join (poll thread). Returns false when it should be retried later. */
    private boolean tryJoin() {
        try {
            boolean rewind = cfg.startOffset != null || cfg.startTimeMs != null;
            if (rewind && cfg.mode == ConsumeMode.CLUSTER) {
                reset();
            }
            join();
            if (rewind && cfg.mode == ConsumeMode.BROADCAST) {
                // A broadcast member's own offsets exist only once it has joined.
                reset();
                join();
            }
            joined = true;
            heartbeatThread = new Thread(this::heartbeatLoop, "imago-heartbeat-" + member);
            heartbeatThread.setDaemon(true);
            heartbeatThread.start();
            return true;
        } catch (NotFoundException e) {
            LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: {1}; waiting for the topic", member, e.getMessage());
            joinRetryAtNanos = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
            return false;
        } catch (ImagoException e) {
            if (e.isRetriable()) {
                LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: join failed: {1}", member, e);
                joinRetryAtNanos = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(500);
                return false;
            }
            throw e;
        }
    }

    private void reset() {
        String target = cfg.startOffset != null ? Long.toString(cfg.startOffset) : "@" + cfg.startTimeMs;
        control.call("reset " + cfg.group + " " + cfg.topic + " -1 " + target).expectOk();
    }

    private void join() {
        Reply r = control.call("join " + cfg.group + " " + cfg.topic + " " + member + " " + cfg.mode.wire() + " "
                + cfg.start.wire());
        publish(parseAssignment(r.expectOk().text()), true);
    }

    private Assignment parseAssignment(String body) {
        String[] t = body.trim().split(" ");
        if (t.length < 2) {
            throw new ImagoProtocolException("bad assignment '" + body + "'");
        }
        try {
            return new Assignment(Long.parseLong(t[0]), Long.parseLong(t[1]), Wire.parsePartitionOffsets(t, 2));
        } catch (NumberFormatException e) {
            throw new ImagoProtocolException("bad assignment '" + body + "'");
        }
    }

    private void publish(Assignment a, boolean always) {
        Assignment cur = latest;
        sessionTimeoutMs = a.sessionTimeoutMs;
        if (!always && cur != null && cur.generation == a.generation) {
            return;
        }
        a.seq = assignmentSeq.incrementAndGet();
        latest = a;
        LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: generation {1}, partitions {2}", member,
                a.generation, a.offsets);
        signal();
    }

    private void requestHeartbeat() {
        long now = System.nanoTime();
        if (now - lastHeartbeatRequestNanos < TimeUnit.MILLISECONDS.toNanos(HEARTBEAT_NOW_MIN_GAP_MS)) {
            return;
        }
        lastHeartbeatRequestNanos = now;
        synchronized (heartbeatMonitor) {
            heartbeatRequested = true;
            heartbeatMonitor.notifyAll();
        }
    }

    private void heartbeatLoop() {
        int failures = 0;
        while (!closed.get()) {
            long interval = Math.max(100, sessionTimeoutMs / 3);
            if (failures > 0) {
                interval = Math.min(interval, 100L << Math.min(failures, 4));
            }
            synchronized (heartbeatMonitor) {
                long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(interval);
                while (!heartbeatRequested && !closed.get()) {
                    long left = until - System.nanoTime();
                    if (left <= 0) {
                        break;
                    }
                    try {
                        heartbeatMonitor.wait(Math.max(1, TimeUnit.NANOSECONDS.toMillis(left)));
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                heartbeatRequested = false;
            }
            if (closed.get()) {
                return;
            }
            try {
                Reply r = control.call("heartbeat " + cfg.group + " " + cfg.topic + " " + member);
                if (r.isOk()) {
                    boolean again = republish;
                    republish = false;
                    publish(parseAssignment(r.text()), again);
                } else if (r.code() == 409) {
                    LOG.log(System.Logger.Level.INFO, "imago consumer {0}: {1}; joining again", member, r.text());
                    join();
                } else {
                    LOG.log(System.Logger.Level.WARNING, "imago consumer {0}: heartbeat: {1}", member, r);
                }
                failures = 0;
            } catch (ImagoException e) {
                failures++;
                LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: heartbeat failed: {1}", member, e);
            }
        }
    }

    // ---- poll-thread internals --------------------------------------------------------------

    private void applyAssignment() {
        Assignment a = latest;
        if (a == null || a.seq == appliedSeq) {
            return;
        }
        appliedSeq = a.seq;
        TreeMap<Integer, PartitionState> next = new TreeMap<>();
        List<PartitionState> keep = new ArrayList<>();
        for (Map.Entry<Integer, Long> e : a.offsets.entrySet()) {
            int p = e.getKey();
            long offset = e.getValue();
            PartitionState st = owned.remove(p);
            if (st == null) {
                st = suspended.get(p);
            }
            if (st != null && st.committed == offset) {
                if (cfg.autoCommit && st.position != st.committed) {
                    keep.add(st);
                }
            } else {
                if (st != null) {
                    LOG.log(System.Logger.Level.DEBUG,
                            "imago consumer {0}: partition {1} committed offset moved to {2}; continuing there",
                            member, p, offset);
                }
                st = new PartitionState(p, offset);
            }
            next.put(p, st);
        }
        if (!owned.isEmpty()) {
            LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: generation {1}: lost partitions {2}", member,
                    a.generation, owned.keySet());
        }
        owned.clear();
        owned.putAll(next);
        suspended.clear();
        generation = a.generation;
        if (!keep.isEmpty()) {
            commit(keep, false, 1000);
        }
    }

    private void maybeAutoCommit() {
        if (!cfg.autoCommit) {
            return;
        }
        long now = System.nanoTime();
        if (now - lastAutoCommitNanos < TimeUnit.MILLISECONDS.toNanos(cfg.autoCommitIntervalMs)) {
            return;
        }
        lastAutoCommitNanos = now;
        List<PartitionState> dirty = new ArrayList<>();
        for (PartitionState st : owned.values()) {
            if (st.position != st.committed) {
                dirty.add(st);
            }
        }
        commit(dirty, false, 200);
    }

    /**
     * Commits the positions of {@code states}, pipelined. A 409 (stale generation, partition
     * lost, member unknown) suspends the partition and refreshes the assignment at once with a
     * heartbeat (or a join): when the partition is still ours in the new generation, applying
     * it commits the position again; otherwise the partition is dropped and the error stays.
     */
    private void commit(List<PartitionState> states, boolean throwErrors, long connectWaitMs) {
        if (states.isEmpty()) {
            return;
        }
        List<CompletableFuture<Reply>> futures = new ArrayList<>();
        for (PartitionState st : states) {
            futures.add(control.send("commit " + cfg.group + " " + cfg.topic + " " + st.partition + " "
                    + Long.toUnsignedString(st.position) + " " + member + " " + generation, null,
                    cfg.connection.requestTimeoutMs, connectWaitMs));
        }
        long[] sent = new long[states.size()];
        for (int i = 0; i < states.size(); i++) {
            sent[i] = states.get(i).position;
        }
        ImagoException first = null;
        List<PartitionState> conflicted = new ArrayList<>();
        List<ImagoException> conflicts = new ArrayList<>();
        for (int i = 0; i < states.size(); i++) {
            PartitionState st = states.get(i);
            ImagoException err;
            try {
                Reply r = Connection.await(futures.get(i));
                if (r.isOk()) {
                    st.committed = sent[i];
                    continue;
                }
                err = r.toException();
            } catch (ImagoException e) {
                err = e;
            }
            LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: commit of partition {1} at {2} failed: {3}",
                    member, st.partition, sent[i], err);
            if (err.getCode() == 409) {
                if (owned.get(st.partition) == st) {
                    owned.remove(st.partition);
                    suspended.put(st.partition, st);
                    st.inflight = null;
                }
                conflicted.add(st);
                conflicts.add(err);
            } else if (first == null) {
                first = err;
            }
        }
        if (!conflicted.isEmpty()) {
            if (!refreshing) {
                refreshing = true;
                try {
                    refreshAssignment(connectWaitMs);
                    applyAssignment();
                } catch (ImagoException e) {
                    republish = true;
                    requestHeartbeat();
                    LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: refreshing the assignment failed: {1}",
                            member, e);
                } finally {
                    refreshing = false;
                }
            }
            for (int i = 0; i < conflicted.size(); i++) {
                PartitionState st = conflicted.get(i);
                boolean recommitted = owned.get(st.partition) == st && st.committed == st.position;
                if (!recommitted && first == null) {
                    first = conflicts.get(i);
                }
            }
        }
        if (throwErrors && first != null) {
            throw first;
        }
    }

    /** A heartbeat (or a join after 409 unknown member) from the poll thread; publishes the reply. */
    private void refreshAssignment(long connectWaitMs) {
        Reply r = Connection.await(control.send("heartbeat " + cfg.group + " " + cfg.topic + " " + member, null,
                cfg.connection.requestTimeoutMs, connectWaitMs));
        if (r.isOk()) {
            publish(parseAssignment(r.text()), true);
        } else if (r.code() == 409) {
            join();
        } else {
            throw r.toException();
        }
    }

    private void collect(List<ReceivedMessage> out) {
        for (PartitionState st : owned.values()) {
            InFlight f = st.inflight;
            if (f == null || !f.future.isDone()) {
                continue;
            }
            st.inflight = null;
            Reply r;
            try {
                r = f.future.join();
            } catch (RuntimeException e) {
                ImagoException ex = Connection.unwrap(e);
                st.failures++;
                long backoff = TimeUnit.MILLISECONDS.toNanos(Math.min(2000, 50L << Math.min(st.failures, 6)));
                st.retryAtNanos = System.nanoTime() + backoff;
                if (ex.getCode() == ImagoException.CONNECTION || ex.getCode() == ImagoException.TIMEOUT) {
                    // The partitions share the connection: hold them all back.
                    fetchBlockedUntilNanos = st.retryAtNanos;
                }
                LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: get of partition {1} failed: {2}", member,
                        st.partition, ex);
                continue;
            }
            st.failures = 0;
            handle(st, f, r, out);
        }
    }

    private void handle(PartitionState st, InFlight f, Reply r, List<ReceivedMessage> out) {
        long now = System.nanoTime();
        long doneAt = f.doneAtNanos != 0 ? f.doneAtNanos : now;
        boolean early = cfg.pollWaitMs > 0
                && doneAt - f.sentAtNanos < TimeUnit.MILLISECONDS.toNanos(Math.max(0, cfg.pollWaitMs - 100));
        if (r.isValue()) {
            Wire.Records recs = Wire.parseRecords(r.body());
            for (ReceivedMessage m : recs.messages) {
                if (m.getOffset() < st.position) {
                    continue;
                }
                st.position = m.getOffset() + 1;
                if (tagSet == null || (m.getTag() != null && tagSet.contains(m.getTag()))) {
                    out.add(m);
                }
            }
            if (recs.error != null) {
                long bad = Math.max(recs.errorOffset, st.position);
                st.corrupt++;
                if (st.corrupt >= 3) {
                    LOG.log(System.Logger.Level.WARNING, "imago consumer {0}: skipping record {1} of partition {2}: {3}",
                            member, bad, st.partition, recs.error.getMessage());
                    st.position = bad + 1;
                    st.corrupt = 0;
                } else {
                    LOG.log(System.Logger.Level.WARNING, "imago consumer {0}: partition {1}: {2}; reading it again",
                            member, st.partition, recs.error.getMessage());
                    st.position = bad;
                    st.retryAtNanos = now + TimeUnit.MILLISECONDS.toNanos(100);
                }
            } else {
                st.corrupt = 0;
            }
            return;
        }
        String text = r.text().trim();
        switch (r.code()) {
            case 301:
                try {
                    st.position = Long.parseUnsignedLong(text);
                } catch (NumberFormatException e) {
                    LOG.log(System.Logger.Level.WARNING, "imago consumer {0}: bad 301 body {1}", member, text);
                    st.retryAtNanos = now + TimeUnit.SECONDS.toNanos(1);
                }
                if (early) {
                    requestHeartbeat(); // a rebalance answers parked gets at once
                }
                break;
            case 404:
                if (text.startsWith("no message")) {
                    if (early) {
                        requestHeartbeat();
                    }
                } else {
                    LOG.log(System.Logger.Level.WARNING, "imago consumer {0}: get: {1}", member, text);
                    st.retryAtNanos = now + TimeUnit.SECONDS.toNanos(1);
                }
                break;
            case 520: {
                int i = text.lastIndexOf("next offset ");
                LOG.log(System.Logger.Level.WARNING, "imago consumer {0}: partition {1}: {2}", member, st.partition,
                        text);
                try {
                    st.position = Long.parseUnsignedLong(text.substring(i + "next offset ".length()).trim());
                } catch (RuntimeException e) {
                    st.position = st.position + 1;
                }
                break;
            }
            default:
                LOG.log(System.Logger.Level.WARNING, "imago consumer {0}: get of partition {1}: {2}", member,
                        st.partition, r);
                st.retryAtNanos = now + TimeUnit.SECONDS.toNanos(1);
        }
    }

    private void issueGets(long pollDeadline) {
        long now = System.nanoTime();
        long connectWaitMs = Math.max(200, TimeUnit.NANOSECONDS.toMillis(pollDeadline - now));
        if (now - fetchBlockedUntilNanos < 0) {
            return;
        }
        for (PartitionState st : owned.values()) {
            if (st.inflight != null || now - st.retryAtNanos < 0) {
                continue;
            }
            String line = "get " + cfg.topic + " " + cfg.group + " " + st.partition + " "
                    + Long.toUnsignedString(st.position) + " " + cfg.fetchMaxBytes + " " + cfg.pollWaitMs
                    + (tagsToken != null ? " " + tagsToken : "");
            InFlight f = new InFlight(fetcher.send(line, null, cfg.pollWaitMs + cfg.connection.requestTimeoutMs,
                    connectWaitMs));
            st.inflight = f;
            f.future.whenComplete((r, e) -> {
                f.doneAtNanos = System.nanoTime();
                signal();
            });
            if (f.future.isCompletedExceptionally()) {
                break; // not connected: the others would wait for the connection in turn
            }
        }
    }

    private long nextWakeup(long deadline) {
        long wake = deadline;
        long now = System.nanoTime();
        for (PartitionState st : owned.values()) {
            long at = Math.max(st.retryAtNanos - now, fetchBlockedUntilNanos - now) + now;
            if (st.inflight == null && at - wake < 0) {
                wake = at;
            }
        }
        if (cfg.autoCommit) {
            long due = lastAutoCommitNanos + TimeUnit.MILLISECONDS.toNanos(cfg.autoCommitIntervalMs);
            if (due - wake < 0) {
                wake = due;
            }
        }
        return wake - now < 0 ? now : wake;
    }

    private void signal() {
        signals.incrementAndGet();
        synchronized (monitor) {
            monitor.notifyAll();
        }
    }

    private void waitSignal(long seen, long untilNanos) {
        synchronized (monitor) {
            while (signals.get() == seen && !closed.get()) {
                long left = untilNanos - System.nanoTime();
                if (left <= 0) {
                    return;
                }
                try {
                    monitor.wait(Math.max(1, (left + 999_999) / 1_000_000));
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    throw new ImagoConnectionException("interrupted while polling", e);
                }
            }
        }
    }

    /**
     * Leaves the group: stops the consume and heartbeat threads, commits consumed offsets
     * (auto-commit), sends {@code leave} so the group rebalances at once, and closes the
     * connections.
     */
    @Override
    public void close() {
        if (!closed.compareAndSet(false, true)) {
            return;
        }
        signal();
        synchronized (heartbeatMonitor) {
            heartbeatMonitor.notifyAll();
        }
        Thread ct;
        synchronized (this) {
            ct = consumeThread;
        }
        boolean listenerBusy = false;
        if (ct != null && ct != Thread.currentThread()) {
            try {
                ct.join(cfg.connection.requestTimeoutMs * 2 + 1000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            listenerBusy = ct.isAlive();
            if (listenerBusy) {
                LOG.log(System.Logger.Level.WARNING,
                        "imago consumer {0}: the listener is still busy; closing without a final commit", member);
            }
        }
        Thread hb = heartbeatThread;
        if (hb != null) {
            try {
                hb.join(cfg.connection.requestTimeoutMs + 1000);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        pollLock.lock();
        try {
            if (joined) {
                try {
                    rewindUnhanded(false);
                    applyAssignment();
                    if (cfg.autoCommit && !listenerBusy) {
                        List<PartitionState> dirty = new ArrayList<>();
                        for (PartitionState st : owned.values()) {
                            if (st.position != st.committed) {
                                dirty.add(st);
                            }
                        }
                        commit(dirty, false, 1000);
                    }
                    control.send("leave " + cfg.group + " " + cfg.topic + " " + member, null,
                            cfg.connection.requestTimeoutMs, 1000).get(cfg.connection.requestTimeoutMs,
                                    TimeUnit.MILLISECONDS);
                } catch (Exception e) {
                    LOG.log(System.Logger.Level.DEBUG, "imago consumer {0}: leave failed: {1}", member, e);
                }
            }
            owned.clear();
        } finally {
            pollLock.unlock();
        }
        control.close();
        fetcher.close();
    }

    /** The control connection, for tests. */
    Connection controlConnection() {
        return control;
    }

    /** The fetch connection, for tests. */
    Connection fetchConnection() {
        return fetcher;
    }

    private static final class Assignment {
        final long generation;
        final long sessionTimeoutMs;
        final Map<Integer, Long> offsets;
        long seq;

        Assignment(long generation, long sessionTimeoutMs, Map<Integer, Long> offsets) {
            this.generation = generation;
            this.sessionTimeoutMs = sessionTimeoutMs;
            this.offsets = offsets;
        }
    }

    private static final class InFlight {
        final CompletableFuture<Reply> future;
        final long sentAtNanos = System.nanoTime();
        volatile long doneAtNanos;

        InFlight(CompletableFuture<Reply> future) {
            this.future = future;
        }
    }

    private static final class PartitionState {
        final int partition;
        long position;
        long committed;
        InFlight inflight;
        long retryAtNanos = System.nanoTime();
        int failures;
        int corrupt;

        PartitionState(int partition, long offset) {
            this.partition = partition;
            this.position = offset;
            this.committed = offset;
        }
    }
}
