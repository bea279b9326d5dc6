package io.imago.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.ByteArrayOutputStream;
import java.io.InputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** Admin calls (every stats item, version), request timeouts, and the example program. */
@Timeout(90)
class AdminAndConnectionTest {
    static TestBroker broker;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = TestBroker.start();
    }

    @AfterAll
    static void stopBroker() {
        broker.close();
    }

    @Test
    void everyStatsItemIsReturnedAsAMap() {
        try (ImagoProducer p = new ImagoProducer(broker.address()); ImagoAdmin admin = new ImagoAdmin(broker.address())) {
            for (int i = 0; i < 5; i++) {
                p.send(Message.builder("stats-topic").body("m" + i).partition(1).build());
            }
            admin.commit("stats-group", "stats-topic", 1, 3);

            String version = admin.version();
            assertFalse(version.isEmpty());
            Map<String, String> general = admin.stats();
            assertEquals(version, general.get("version"));
            assertTrue(Long.parseLong(general.get("pid")) > 0);
            assertTrue(Long.parseLong(general.get("cmd_put")) >= 5, general.toString());

            assertEquals("4", admin.stats("topics").get("topic:stats-topic:partitions"));
            assertEquals("5", admin.stats("topics").get("topic:stats-topic:messages"));
            assertEquals("5", admin.stats("offsets").get("stats-topic:1:max_offset"));
            Map<String, String> topic = admin.stats("stats-topic");
            assertEquals("0", topic.get("stats-topic:1:min_offset"));
            assertEquals("5", topic.get("stats-topic:1:max_offset"));
            assertEquals(8, topic.size(), "two lines per partition");
            Map<String, String> settings = admin.stats("settings");
            assertEquals("1024", settings.get("line_bytes_max"));
            assertEquals("4", settings.get("default_partitions"));
            assertTrue(admin.stats("conns").keySet().stream().anyMatch(k -> k.endsWith(":addr")));
            assertEquals("3", admin.stats("groups").get("group:stats-group:stats-topic:1:committed"));
            Map<String, String> group = admin.stats("group:stats-group");
            assertEquals("3", group.get("group:stats-group:stats-topic:1:committed"));
            assertEquals("2", group.get("group:stats-group:stats-topic:1:lag"));
            assertTrue(admin.stats("help").containsKey("help:topics"), admin.stats("help").toString());

            assertEquals(Map.of(), admin.stats("reset"));
            assertEquals("0", admin.stats().get("cmd_put"), "counters reset");
            BadRequestException unknown = assertThrows(BadRequestException.class, () -> admin.stats("no-such-item"));
            assertEquals(400, unknown.getCode());
            assertEquals("unknown stats item no-such-item", unknown.getMessage());
        }
    }

    @Test
    void aBrokerThatDoesNotAnswerTimesOutEveryCall() throws Exception {
        List<Socket> accepted = new ArrayList<>();
        try (ServerSocket silent = new ServerSocket(0, 50, InetAddress.getByName("127.0.0.1"))) {
            Thread acceptor = new Thread(() -> {
                try {
                    while (true) {
                        Socket s = silent.accept();
                        synchronized (accepted) {
                            accepted.add(s);
                        }
                    }
                } catch (Exception e) {
                    // closed
                }
            });
            acceptor.setDaemon(true);
            acceptor.start();
            String addr = "127.0.0.1:" + silent.getLocalPort();

            try (ImagoAdmin admin = new ImagoAdmin(addr, Duration.ofMillis(500))) {
                long t0 = System.nanoTime();
                ImagoException e = assertThrows(ImagoException.class, admin::version);
                assertEquals(ImagoException.TIMEOUT, e.getCode(), e.toString());
                assertTrue(e instanceof ImagoTimeoutException);
                assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(3), "within the timeout");
                assertThrows(ImagoTimeoutException.class, admin::stats);
            }
            ProducerConfig pc = ProducerConfig.builder(addr).requestTimeout(Duration.ofMillis(400)).retries(0).build();
            try (ImagoProducer p = new ImagoProducer(pc)) {
                long t0 = System.nanoTime();
                assertThrows(ImagoTimeoutException.class,
                        () -> p.send(Message.builder("t").body("x").partition(0).build()));
                assertTrue(System.nanoTime() - t0 < TimeUnit.SECONDS.toNanos(3), "within the timeout");
            }
        } finally {
            synchronized (accepted) {
                for (Socket s : accepted) {
                    s.close();
                }
            }
        }
    }

    @Test
    void theExampleProgramRunsAgainstTheBroker() throws Exception {
        Path classes = Paths.get(ImagoProducer.class.getProtectionDomain().getCodeSource().getLocation().toURI());
        Path java = Paths.get(System.getProperty("java.home"), "bin", "java");
        Process proc = new ProcessBuilder(java.toString(), "-cp", classes.toString(),
                "io.imago.client.example.Example", broker.address(), "600")
                .redirectErrorStream(true)
                .start();
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        try (InputStream in = proc.getInputStream()) {
            in.transferTo(out);
        }
        assertTrue(proc.waitFor(60, TimeUnit.SECONDS), "the example finished");
        String text = out.toString(StandardCharsets.UTF_8);
        assertEquals(0, proc.exitValue(), text);
        assertTrue(text.contains("sent 600 messages"), text);
        assertTrue(text.contains("consumed 600 of 600 messages"), text);
        assertTrue(text.contains("group lag: 0"), text);
    }
}
