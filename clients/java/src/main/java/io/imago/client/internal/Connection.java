package io.imago.client.internal;

import io.imago.client.ImagoConnectionException;
import io.imago.client.ImagoException;
import io.imago.client.ImagoProtocolException;
import io.imago.client.ImagoTimeoutException;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetSocketAddress;
import java.net.Socket;
import java.net.UnknownHostException;
import java.nio.charset.StandardCharsets;
import java.util.Iterator;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.locks.ReentrantLock;

/**
 * One logical connection to the broker: requests are written with a fresh opaque and replies
 * are matched to them by opaque, so any number of requests may be in flight (pipelining) and a
 * long-poll reply may overtake later ones.
 *
 * <p>A reader thread per TCP connection completes the futures. When the TCP connection fails
 * (EOF, I/O error, unreadable reply, or a request timeout), every request in flight on it fails
 * with {@link ImagoConnectionException} and the next request reconnects, trying the brokers in
 * turn with exponential backoff ({@code reconnectBackoffMs} doubling up to
 * {@code reconnectBackoffMaxMs}) until that request's deadline.
 *
 * <p>Futures are completed on the reader thread: callbacks must not block on another request of
 * the same connection.
 */
public final class Connection implements AutoCloseable {
    private static final System.Logger LOG = System.getLogger("io.imago.client");
    /** The opaque of replies to requests without one (and of errors whose opaque is unreadable). */
    public static final int OPAQUE_NONE = Integer.MAX_VALUE;
    private static final int LINE_MAX = 64 * 1024;

    private static final ScheduledThreadPoolExecutor TIMER = new ScheduledThreadPoolExecutor(1, r -> {
        Thread t = new Thread(r, "imago-request-timer");
        t.setDaemon(true);
        return t;
    });

    static {
        TIMER.setRemoveOnCancelPolicy(true);
    }

    private final ConnectionOptions opts;
    private final String name;
    private final ReentrantLock lock = new ReentrantLock();
    private final AtomicInteger opaques = new AtomicInteger();
    private final AtomicLong connects = new AtomicLong();
    private Session session; // guarded by lock
    private int brokerIndex; // guarded by lock
    private long backoffMs; // guarded by lock
    private long nextAttemptNanos = System.nanoTime(); // guarded by lock
    private Exception lastConnectError; // guarded by lock
    private volatile boolean closed;

    public Connection(ConnectionOptions opts, String name) {
        this.opts = opts;
        this.name = name;
    }

    public ConnectionOptions options() {
        return opts;
    }

    /** Sends {@code line} (without its opaque) and {@code body} (may be null) with the default timeout. */
    public CompletableFuture<Reply> send(String line, byte[] body) {
        return send(line, body, opts.requestTimeoutMs);
    }

    /**
     * Sends one request: {@code line} is the request line without its opaque and line end (this
     * method appends both); {@code body} the bytes that follow it (null for none). The future
     * completes with the reply, or exceptionally with an {@link ImagoException}: a timeout
     * after {@code timeoutMs} (reconnecting included), or a connection failure.
     */
    public CompletableFuture<Reply> send(String line, byte[] body, long timeoutMs) {
        return send(line, body, timeoutMs, timeoutMs);
    }

    /**
     * As {@link #send(String, byte[], long)}, but spends at most {@code connectWaitMs} of the
     * timeout waiting for the connection (lock, backoff, connect): when the broker is down the
     * request fails fast with {@link ImagoConnectionException} instead of waiting out its
     * timeout, so a poll loop stays responsive.
     */
    public CompletableFuture<Reply> send(String line, byte[] body, long timeoutMs, long connectWaitMs) {
        CompletableFuture<Reply> f = new CompletableFuture<>();
        long start = System.nanoTime();
        long deadline = start + TimeUnit.MILLISECONDS.toNanos(timeoutMs);
        long connectDeadline = start + TimeUnit.MILLISECONDS.toNanos(Math.min(timeoutMs, Math.max(1, connectWaitMs)));
        int opaque = nextOpaque();
        byte[] head = (line + " " + opaque + "\r\n").getBytes(StandardCharsets.UTF_8);
        Session s;
        try {
            if (!lock.tryLock(Math.max(0, connectDeadline - System.nanoTime()), TimeUnit.NANOSECONDS)) {
                throw new ImagoConnectionException("connection busy reconnecting; could not send '" + line + "'");
            }
            try {
                s = ensureSession(connectDeadline);
                s.pending.put(opaque, f);
                if (s.broken.get()) {
                    s.pending.remove(opaque);
                    throw new ImagoConnectionException("connection to " + s.peer + " failed");
                }
                try {
                    s.write(head, body);
                } catch (IOException e) {
                    s.fail("write to " + s.peer + " failed: " + e.getMessage(), e);
                    return f;
                }
            } finally {
                lock.unlock();
            }
        } catch (ImagoException e) {
            f.completeExceptionally(e);
            return f;
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            f.completeExceptionally(new ImagoConnectionException("interrupted while sending '" + line + "'", e));
            return f;
        }
        long remaining = Math.max(1, deadline - System.nanoTime());
        final Session sess = s;
        ScheduledFuture<?> timer = TIMER.schedule(() -> {
            if (sess.pending.remove(opaque, f)) {
                // Break the session first: a request sent as soon as this future fails must
                // go to a new connection, not to this one (and then fail with it).
                sess.fail("a request timed out", null);
                f.completeExceptionally(new ImagoTimeoutException(
                        "no reply from " + sess.peer + " within " + timeoutMs + " ms to '" + line + "'"));
            }
        }, remaining, TimeUnit.NANOSECONDS);
        f.whenComplete((r, e) -> timer.cancel(false));
        return f;
    }

    /** Sends and waits for the reply; throws the request's {@link ImagoException}. */
    public Reply call(String line, byte[] body, long timeoutMs) {
        return await(send(line, body, timeoutMs));
    }

    /** {@link #call(String, byte[], long)} with the default timeout. */
    public Reply call(String line) {
        return call(line, null, opts.requestTimeoutMs);
    }

    /** Waits for a request's future and rethrows its {@link ImagoException} as is. */
    public static <T> T await(CompletableFuture<T> f) {
        try {
            return f.get();
        } catch (ExecutionException e) {
            throw unwrap(e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            throw new ImagoConnectionException("interrupted", e);
        }
    }

    /** The {@link ImagoException} behind a future's failure. */
    public static ImagoException unwrap(Throwable t) {
        while ((t instanceof java.util.concurrent.CompletionException || t instanceof ExecutionException)
                && t.getCause() != null) {
            t = t.getCause();
        }
        if (t instanceof ImagoException) {
            return (ImagoException) t;
        }
        return new ImagoException(ImagoException.PROTOCOL, String.valueOf(t), t);
    }

    /** Whether a TCP connection is open now. */
    public boolean isConnected() {
        lock.lock();
        try {
            return session != null && !session.broken.get();
        } finally {
            lock.unlock();
        }
    }

    /** How many TCP connections this connection has opened so far. */
    public long connectCount() {
        return connects.get();
    }

    /**
     * Closes the current TCP connection as if the network had failed: requests in flight fail
     * with {@link ImagoConnectionException} and the next request reconnects. For tests and for
     * forcing a reconnect.
     */
    public void closeSocket() {
        Session s;
        lock.lock();
        try {
            s = session;
        } finally {
            lock.unlock();
        }
        if (s != null) {
            s.fail("socket closed by the client", null);
        }
    }

    @Override
    public void close() {
        closed = true;
        closeSocket();
    }

    private int nextOpaque() {
        while (true) {
            int o = opaques.getAndIncrement() & 0x7fffffff;
            if (o != OPAQUE_NONE) {
                return o;
            }
        }
    }

    private Session ensureSession(long deadline) throws InterruptedException {
        if (session != null && !session.broken.get()) {
            return session;
        }
        session = null;
        int n = opts.brokers.size();
        while (true) {
            if (closed) {
                throw new ImagoConnectionException("connection " + name + " is closed");
            }
            long now = System.nanoTime();
            if (nextAttemptNanos - now > 0) {
                if (nextAttemptNanos - deadline >= 0) {
                    throw notReachable(null);
                }
                TimeUnit.NANOSECONDS.sleep(nextAttemptNanos - now);
                now = System.nanoTime();
            }
            long remainingMs = TimeUnit.NANOSECONDS.toMillis(deadline - now);
            if (remainingMs <= 0) {
                throw notReachable(null);
            }
            InetSocketAddress a = opts.brokers.get(Math.floorMod(brokerIndex, n));
            String peer = a.getHostString() + ":" + a.getPort();
            Socket sock = new Socket();
            try {
                InetSocketAddress resolved = new InetSocketAddress(a.getHostString(), a.getPort());
                if (resolved.isUnresolved()) {
                    throw new UnknownHostException(a.getHostString());
                }
                sock.setTcpNoDelay(true);
                sock.setKeepAlive(true);
                sock.connect(resolved, (int) Math.max(1, Math.min(opts.connectTimeoutMs, remainingMs)));
                Session s = new Session(sock, peer);
                session = s;
                backoffMs = 0;
                connects.incrementAndGet();
                s.start();
                LOG.log(System.Logger.Level.DEBUG, "imago {0}: connected to {1}", name, peer);
                return s;
            } catch (IOException e) {
                try {
                    sock.close();
                } catch (IOException ignored) {
                    // nothing to do
                }
                lastConnectError = e;
                brokerIndex++;
                backoffMs = backoffMs == 0 ? opts.reconnectBackoffMs : Math.min(backoffMs * 2, opts.reconnectBackoffMaxMs);
                nextAttemptNanos = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(backoffMs);
                LOG.log(System.Logger.Level.DEBUG, "imago {0}: cannot connect to {1}: {2}; retrying in {3} ms",
                        name, peer, e, backoffMs);
            }
        }
    }

    private ImagoConnectionException notReachable(Exception cause) {
        Exception c = cause != null ? cause : lastConnectError;
        return new ImagoConnectionException("cannot reach broker " + brokerList()
                + (c != null ? ": " + c : "") + " (reconnecting with backoff)", c);
    }

    private String brokerList() {
        StringBuilder sb = new StringBuilder();
        for (InetSocketAddress a : opts.brokers) {
            if (sb.length() > 0) {
                sb.append(',');
            }
            sb.append(a.getHostString()).append(':').append(a.getPort());
        }
        return sb.toString();
    }

    /** One TCP connection and the requests in flight on it. */
    private final class Session {
        final Socket socket;
        final String peer;
        final OutputStream out;
        final Map<Integer, CompletableFuture<Reply>> pending = new ConcurrentHashMap<>();
        final AtomicBoolean broken = new AtomicBoolean();
        volatile ImagoException unmatchedError;

        Session(Socket socket, String peer) throws IOException {
            this.socket = socket;
            this.peer = peer;
            this.out = new BufferedOutputStream(socket.getOutputStream(), 64 * 1024);
        }

        void start() {
            Thread t = new Thread(this::readLoop, "imago-reader-" + name + "-" + peer);
            t.setDaemon(true);
            t.start();
        }

        void write(byte[] head, byte[] body) throws IOException {
            out.write(head);
            if (body != null) {
                out.write(body);
            }
            out.flush();
        }

        void fail(String why, Throwable cause) {
            if (!broken.compareAndSet(false, true)) {
                return;
            }
            try {
                socket.close();
            } catch (IOException ignored) {
                // nothing to do
            }
            ImagoException reason = unmatchedError;
            int failed = 0;
            for (Iterator<Map.Entry<Integer, CompletableFuture<Reply>>> it = pending.entrySet().iterator(); it.hasNext();) {
                CompletableFuture<Reply> f = it.next().getValue();
                it.remove();
                failed++;
                f.completeExceptionally(reason != null
                        ? ImagoException.fromReply(reason.getCode(), reason.getMessage())
                        : new ImagoConnectionException("connection to " + peer + " lost: " + why, cause));
            }
            LOG.log(System.Logger.Level.DEBUG, "imago {0}: connection to {1} lost ({2}); {3} requests failed",
                    name, peer, why, failed);
        }

        private void readLoop() {
            try {
                InputStream in = new BufferedInputStream(socket.getInputStream(), 64 * 1024);
                while (true) {
                    String line = readLine(in);
                    if (line == null) {
                        fail("closed by the broker", null);
                        return;
                    }
                    if (line.isEmpty()) {
                        continue;
                    }
                    String[] t = line.split(" ", -1);
                    int code;
                    int len;
                    int opaque;
                    try {
                        if (t.length == 4 && t[0].equals("result")) {
                            code = Integer.parseInt(t[1]);
                            len = Integer.parseInt(t[2]);
                            opaque = Integer.parseInt(t[3]);
                        } else if (t.length == 3 && t[0].equals("value")) {
                            code = Reply.VALUE;
                            len = Integer.parseInt(t[1]);
                            opaque = Integer.parseInt(t[2]);
                        } else {
                            throw new NumberFormatException();
                        }
                    } catch (NumberFormatException e) {
                        throw new ImagoProtocolException("unexpected reply line '" + line + "' from " + peer);
                    }
                    if (len < 0) {
                        throw new ImagoProtocolException("negative length in reply line '" + line + "'");
                    }
                    byte[] body = in.readNBytes(len);
                    if (body.length < len) {
                        fail("closed by the broker in the middle of a reply", null);
                        return;
                    }
                    Reply r = new Reply(code, opaque, body);
                    CompletableFuture<Reply> f = pending.remove(opaque);
                    if (f != null) {
                        f.complete(r);
                    } else if (opaque == OPAQUE_NONE && code >= 400) {
                        unmatchedError = r.toException();
                        LOG.log(System.Logger.Level.WARNING, "imago {0}: broker {1} says {2}", name, peer, r);
                    }
                    // else: the reply to a request that timed out; dropped.
                }
            } catch (IOException e) {
                fail(e.toString(), e);
            } catch (RuntimeException e) {
                fail(e.getMessage(), e);
            }
        }
    }

    /** Reads a line up to {@code \n}, without its {@code \r\n}; null at the end of the stream. */
    static String readLine(InputStream in) throws IOException {
        ByteArrayOutputStream buf = new ByteArrayOutputStream(64);
        while (true) {
            int b = in.read();
            if (b < 0) {
                return null;
            }
            if (b == '\n') {
                byte[] bytes = buf.toByteArray();
                int n = bytes.length;
                if (n > 0 && bytes[n - 1] == '\r') {
                    n--;
                }
                return new String(bytes, 0, n, StandardCharsets.UTF_8);
            }
            if (buf.size() >= LINE_MAX) {
                throw new ImagoProtocolException("reply line longer than " + LINE_MAX + " bytes");
            }
            buf.write(b);
        }
    }
}
