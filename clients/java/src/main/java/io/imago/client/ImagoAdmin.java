package io.imago.client;

import io.imago.client.internal.Commands;
import io.imago.client.internal.Connection;
import io.imago.client.internal.ConnectionOptions;
import io.imago.client.internal.Reply;
import io.imago.client.internal.Wire;
import java.time.Duration;
import java.util.Map;
import java.util.OptionalLong;
import java.util.TreeMap;

/**
 * Administrative requests: statistics, version, committed offsets and rewinds.
 *
 * <pre>{@code
 * try (ImagoAdmin admin = new ImagoAdmin("127.0.0.1:8123")) {
 *     System.out.println(admin.version());
 *     System.out.println(admin.stats("groups"));
 *     admin.reset("billing", "orders", -1, "earliest");
 * }
 * }</pre>
 *
 * Thread-safe; requests from several threads are pipelined on one connection.
 */
public final class ImagoAdmin implements AutoCloseable {
    private final Connection conn;

    public ImagoAdmin(String brokers) {
        this(brokers, Duration.ofSeconds(10));
    }

    public ImagoAdmin(String brokers, Duration requestTimeout) {
        ConnectionOptions opts = new ConnectionOptions(ConnectionOptions.parseBrokers(brokers), 3000,
                requestTimeout.toMillis(), 50, 1000);
        this.conn = new Connection(opts, "admin");
    }

    /** The general counters ({@code stats}). */
    public Map<String, String> stats() {
        return Commands.stats(conn, "");
    }

    /**
     * One stats item: {@code topics}, {@code offsets}, {@code settings}, {@code conns},
     * {@code groups}, {@code group:<g>}, {@code help}, a topic name, or {@code reset} (which
     * resets the counters and returns an empty map). An unknown item is a
     * {@link BadRequestException}.
     */
    public Map<String, String> stats(String item) {
        return Commands.stats(conn, item);
    }

    /** The broker's version. */
    public String version() {
        return conn.call("version").expectOk().text();
    }

    /** The partition count of a topic; {@link NotFoundException} when it does not exist. */
    public int partitionCount(String topic) {
        return offsetsOf(topic).size();
    }

    /** Partition to max offset (the offset the next message will get). */
    public Map<Integer, Long> maxOffsets(String topic) {
        Map<Integer, Long> m = new TreeMap<>();
        offsetsOf(topic).forEach((p, r) -> m.put(p, r[1]));
        return m;
    }

    /** Partition to min offset (the oldest offset still held). */
    public Map<Integer, Long> minOffsets(String topic) {
        Map<Integer, Long> m = new TreeMap<>();
        offsetsOf(topic).forEach((p, r) -> m.put(p, r[0]));
        return m;
    }

    private Map<Integer, long[]> offsetsOf(String topic) {
        Wire.checkName("topic", topic);
        Map<Integer, long[]> o = Commands.offsets(conn, topic);
        if (o == null) {
            throw new NotFoundException("unknown topic " + topic);
        }
        return o;
    }

    /**
     * Rewinds (or forwards) a group's committed offsets: {@code reset <group> <topic> <partition> <target>}.
     *
     * @param partition a partition, or -1 for all
     * @param target {@code earliest}, {@code latest}, an offset (clamped into [min, max]), or
     *     {@code @<unixMs>} (the first message stored at or after that time); see
     *     {@link #atTime(long)}
     * @return partition to the offset now committed
     */
    public Map<Integer, Long> reset(String group, String topic, int partition, String target) {
        String line = "reset " + Wire.checkName("group", group) + " " + Wire.checkName("topic", topic) + " "
                + partition + " " + checkTarget(target);
        String body = conn.call(line).expectOk().text();
        return Wire.parsePartitionOffsets(body.split(" "), 0);
    }

    /** The reset target for "the first message stored at or after {@code unixMs}". */
    public static String atTime(long unixMs) {
        return "@" + unixMs;
    }

    static String checkTarget(String target) {
        if (target == null) {
            throw new IllegalArgumentException("reset target is null");
        }
        if (target.equals("earliest") || target.equals("latest")) {
            return target;
        }
        String digits = target.startsWith("@") ? target.substring(1) : target;
        if (!digits.isEmpty() && digits.chars().allMatch(Character::isDigit)) {
            return target;
        }
        throw new IllegalArgumentException("reset target '" + target + "' must be earliest, latest, an offset or @<unixMs>");
    }

    /** The group-level committed offset of a partition, empty when none was committed. */
    public OptionalLong fetchCommitted(String group, String topic, int partition) {
        return fetchCommitted(group, topic, partition, "-");
    }

    /**
     * The committed offset a member reads: a broadcast member's own offset, otherwise the
     * group's ({@code member} "-"). Empty when none was committed.
     */
    public OptionalLong fetchCommitted(String group, String topic, int partition, String member) {
        String m = "-".equals(member) ? "-" : Wire.checkName("member", member);
        Reply r = conn.call("fetch " + Wire.checkName("group", group) + " " + Wire.checkName("topic", topic) + " "
                + partition + " " + m);
        if (r.code() == 404 && r.text().startsWith("no committed offset")) {
            return OptionalLong.empty();
        }
        return OptionalLong.of(Long.parseUnsignedLong(r.expectOk().text().trim()));
    }

    /**
     * Commits a group-level offset without membership ({@code commit <group> <topic> <p> <offset> - -1}):
     * for consumers that manage their own partitions. {@code offset} is the next offset to consume.
     */
    public void commit(String group, String topic, int partition, long offset) {
        conn.call("commit " + Wire.checkName("group", group) + " " + Wire.checkName("topic", topic) + " " + partition
                + " " + Long.toUnsignedString(offset) + " - -1").expectOk();
    }

    @Override
    public void close() {
        conn.close();
    }
}
