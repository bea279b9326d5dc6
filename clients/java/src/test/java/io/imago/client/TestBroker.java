package io.imago.client;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.net.ServerSocket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

/**
 * A real imago broker for tests: {@code $IMAGO_BIN} (default {@code <repo>/target/debug/imago})
 * on 127.0.0.1 with a temporary data directory. The address is read from the first stdout line
 * ({@code imago <version> listening on <ip:port>}); {@link #stop()} sends SIGTERM.
 */
final class TestBroker implements AutoCloseable {
    private final Path bin;
    private final Path dataDir;
    private final List<String> extraArgs;
    private String listen;
    private Process process;
    private String address;

    private TestBroker(String listen, List<String> extraArgs) throws IOException {
        this.bin = binary();
        this.dataDir = Files.createTempDirectory("imago-java-test-");
        this.listen = listen;
        this.extraArgs = extraArgs;
    }

    /** A broker on a port the OS picks. */
    static TestBroker start(String... extraArgs) throws IOException {
        TestBroker b = new TestBroker("127.0.0.1:0", List.of(extraArgs));
        b.launch();
        return b;
    }

    /**
     * A broker on a fixed free port chosen now (bind port 0, read it, close), so that a
     * restarted broker listens on the same address and clients reconnect to it.
     */
    static TestBroker startOnFixedPort(String... extraArgs) throws IOException {
        int port;
        try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getByName("127.0.0.1"))) {
            port = s.getLocalPort();
        }
        TestBroker b = new TestBroker("127.0.0.1:" + port, List.of(extraArgs));
        b.launch();
        return b;
    }

    static Path binary() {
        String env = System.getenv("IMAGO_BIN");
        if (env == null || env.isEmpty()) {
            env = System.getProperty("imago.bin");
        }
        if (env != null && !env.isEmpty()) {
            return Paths.get(env);
        }
        Path dir = Paths.get("").toAbsolutePath();
        while (dir != null && !Files.exists(dir.resolve("Cargo.toml"))) {
            dir = dir.getParent();
        }
        if (dir == null) {
            throw new IllegalStateException("set IMAGO_BIN to the imago broker binary");
        }
        return dir.resolve("target/debug/imago");
    }

    private void launch() throws IOException {
        List<String> cmd = new ArrayList<>(List.of(bin.toString(), "--listen", listen, "--data-dir",
                dataDir.resolve("data").toString(), "--segment-bytes", "8388608"));
        cmd.addAll(extraArgs);
        ProcessBuilder pb = new ProcessBuilder(cmd);
        pb.redirectError(ProcessBuilder.Redirect.appendTo(dataDir.resolve("broker.log").toFile()));
        Process p = pb.start();
        BufferedReader out = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        CompletableFuture<String> first = new CompletableFuture<>();
        Thread t = new Thread(() -> {
            try {
                String line = out.readLine();
                first.complete(line);
                while (out.readLine() != null) {
                    // drain
                }
            } catch (IOException e) {
                first.completeExceptionally(e);
            }
        }, "imago-test-broker-stdout");
        t.setDaemon(true);
        t.start();
        String line;
        try {
            line = first.get(20, TimeUnit.SECONDS);
        } catch (Exception e) {
            p.destroyForcibly();
            throw new IOException("broker did not start: " + e + "; log: " + log(), e);
        }
        String marker = " listening on ";
        if (line == null || !line.startsWith("imago ") || !line.contains(marker)) {
            p.destroyForcibly();
            throw new IOException("unexpected first line from the broker: " + line + "; log: " + log());
        }
        this.address = line.substring(line.indexOf(marker) + marker.length()).trim();
        this.process = p;
    }

    /** {@code ip:port} of the running broker. */
    String address() {
        return address;
    }

    /** Stops the broker with SIGTERM and waits for it. */
    void stop() {
        if (process == null) {
            return;
        }
        process.destroy();
        try {
            if (!process.waitFor(20, TimeUnit.SECONDS)) {
                process.destroyForcibly();
                process.waitFor(5, TimeUnit.SECONDS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
        process = null;
    }

    /** Stops the broker and starts it again on the same address and data directory. */
    void restart() throws IOException {
        stop();
        if (listen.endsWith(":0")) {
            listen = address;
        }
        IOException last = null;
        for (int i = 0; i < 50; i++) {
            try {
                launch();
                return;
            } catch (IOException e) {
                last = e; // the port may linger briefly
                try {
                    Thread.sleep(100);
                } catch (InterruptedException ie) {
                    Thread.currentThread().interrupt();
                    break;
                }
            }
        }
        throw last;
    }

    String log() {
        try {
            return Files.readString(dataDir.resolve("broker.log"));
        } catch (IOException e) {
            return "(no log)";
        }
    }

    @Override
    public void close() {
        stop();
        try (Stream<Path> s = Files.walk(dataDir)) {
            s.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        } catch (IOException ignored) {
            // best effort
        }
    }
}
