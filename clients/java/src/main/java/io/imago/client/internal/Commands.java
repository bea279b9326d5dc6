package io.imago.client.internal;

import io.imago.client.BadRequestException;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;

/** Requests shared by the producer, the consumer and the admin client. */
public final class Commands {
    /** Stats items that take precedence over topic names. */
    private static final Set<String> STATS_WORDS = Set.of("topics", "offsets", "settings", "conns", "reset", "help",
            "groups");

    private Commands() {
    }

    /** {@code stats <item> <opaque>} as name to value; item "" gives the general counters. */
    public static Map<String, String> stats(Connection c, String item) {
        if (item.indexOf(' ') >= 0 || item.indexOf('\n') >= 0 || item.indexOf('\r') >= 0) {
            throw new IllegalArgumentException("stats item '" + item + "' may not contain spaces or line ends");
        }
        return Wire.parseStats(c.call("stats " + item).expectOk().text());
    }

    /**
     * Partition to {min, max} offsets of a topic, or null when the topic does not exist.
     * Topics named like a stats item ({@code topics}, {@code help}, ...) are read from
     * {@code stats offsets}.
     */
    public static Map<Integer, long[]> offsets(Connection c, String topic) {
        Map<String, String> stats;
        try {
            stats = stats(c, STATS_WORDS.contains(topic) ? "offsets" : topic);
        } catch (BadRequestException e) {
            return null; // unknown stats item: no such topic
        }
        Map<Integer, long[]> out = new TreeMap<>();
        String prefix = topic + ":";
        for (Map.Entry<String, String> e : stats.entrySet()) {
            String k = e.getKey();
            if (!k.startsWith(prefix)) {
                continue;
            }
            String rest = k.substring(prefix.length());
            int colon = rest.indexOf(':');
            if (colon <= 0) {
                continue;
            }
            int p;
            try {
                p = Integer.parseInt(rest.substring(0, colon));
            } catch (NumberFormatException ex) {
                continue;
            }
            long[] range = out.computeIfAbsent(p, x -> new long[2]);
            String field = rest.substring(colon + 1);
            if (field.equals("min_offset")) {
                range[0] = Long.parseUnsignedLong(e.getValue());
            } else if (field.equals("max_offset")) {
                range[1] = Long.parseUnsignedLong(e.getValue());
            }
        }
        return out.isEmpty() ? null : out;
    }

    /** The partition count of a topic, or -1 when it does not exist. */
    public static int partitionCount(Connection c, String topic) {
        Map<Integer, long[]> o = offsets(c, topic);
        return o == null ? -1 : o.size();
    }

    /** The broker's {@code default_partitions}: how many partitions a topic created by a put gets. */
    public static int defaultPartitions(Connection c) {
        String v = stats(c, "settings").get("default_partitions");
        return v == null ? 4 : Integer.parseInt(v);
    }
}
