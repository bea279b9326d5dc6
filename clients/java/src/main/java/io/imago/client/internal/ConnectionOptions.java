package io.imago.client.internal;

import java.net.InetSocketAddress;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;

/** Where and how a {@link Connection} connects. */
public final class ConnectionOptions {
    public final List<InetSocketAddress> brokers;
    public final long connectTimeoutMs;
    public final long requestTimeoutMs;
    public final long reconnectBackoffMs;
    public final long reconnectBackoffMaxMs;

    public ConnectionOptions(List<InetSocketAddress> brokers, long connectTimeoutMs, long requestTimeoutMs,
            long reconnectBackoffMs, long reconnectBackoffMaxMs) {
        if (brokers.isEmpty()) {
            throw new IllegalArgumentException("no broker address");
        }
        this.brokers = Collections.unmodifiableList(new ArrayList<>(brokers));
        this.connectTimeoutMs = positive("connectTimeoutMs", connectTimeoutMs);
        this.requestTimeoutMs = positive("requestTimeoutMs", requestTimeoutMs);
        this.reconnectBackoffMs = positive("reconnectBackoffMs", reconnectBackoffMs);
        this.reconnectBackoffMaxMs = Math.max(reconnectBackoffMs, reconnectBackoffMaxMs);
    }

    private static long positive(String what, long v) {
        if (v <= 0) {
            throw new IllegalArgumentException(what + " must be positive, got " + v);
        }
        return v;
    }

    /**
     * Parses {@code host:port[,host:port]...}. Addresses stay unresolved until each connect, so
     * a name that moves to a new address is followed.
     */
    public static List<InetSocketAddress> parseBrokers(String brokers) {
        if (brokers == null || brokers.isBlank()) {
            throw new IllegalArgumentException("brokers must be host:port[,host:port]...");
        }
        List<InetSocketAddress> out = new ArrayList<>();
        for (String part : brokers.split(",")) {
            String s = part.trim();
            if (s.isEmpty()) {
                continue;
            }
            int colon = s.lastIndexOf(':');
            if (colon <= 0 || colon == s.length() - 1) {
                throw new IllegalArgumentException("broker address '" + s + "' is not host:port");
            }
            String host = s.substring(0, colon);
            if (host.startsWith("[") && host.endsWith("]")) {
                host = host.substring(1, host.length() - 1);
            }
            int port;
            try {
                port = Integer.parseInt(s.substring(colon + 1));
            } catch (NumberFormatException e) {
                throw new IllegalArgumentException("broker address '" + s + "' has a bad port");
            }
            if (port <= 0 || port > 65535) {
                throw new IllegalArgumentException("broker address '" + s + "' has a bad port");
            }
            out.add(InetSocketAddress.createUnresolved(host, port));
        }
        if (out.isEmpty()) {
            throw new IllegalArgumentException("brokers must be host:port[,host:port]...");
        }
        return out;
    }
}
