package io.imago.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/**
 * The code of clients/java/README.md, copied verbatim between the BEGIN/END markers (only
 * {@code broker} differs: the README uses 127.0.0.1:8123). Keep both in step.
 */
@Timeout(60)
class ReadmeExamplesTest {
    static TestBroker testBroker;
    static String broker;

    @BeforeAll
    static void start() throws Exception {
        testBroker = TestBroker.start();
        broker = testBroker.address();
    }

    @AfterAll
    static void stop() {
        testBroker.close();
    }

    @Test
    void readmeProducerConsumerAndAdminExamplesRun() throws Exception {
        // BEGIN README produce
        try (ImagoProducer producer = new ImagoProducer(broker)) {
            SendResult r = producer.send(Message.builder("orders")
                    .body("order 42 created")
                    .tag("created")
                    .key("order-42")
                    .property("source", "web")
                    .build());
            System.out.println(r.getPartition() + " " + r.getOffset() + " " + r.getMsgIdString());

            // Pipelined: many sends in flight on one connection.
            for (int i = 0; i < 1000; i++) {
                producer.sendAsync(Message.builder("orders").body("order " + i).tag(i % 2 == 0 ? "created" : "paid").build())
                        .whenComplete((res, err) -> {
                            if (err != null) {
                                System.err.println("send failed: " + err);
                            }
                        });
            }
            producer.flush();
        }
        // END README produce

        java.io.PrintStream stdout = System.out;
        java.io.ByteArrayOutputStream printed = new java.io.ByteArrayOutputStream();
        System.setOut(new java.io.PrintStream(printed, true, "UTF-8"));
        try {
            // BEGIN README poll
            ConsumerConfig cfg = ConsumerConfig.builder(broker, "billing", "orders")
                    .tags("created")
                    .build();
            try (ImagoConsumer consumer = new ImagoConsumer(cfg)) {
                for (int i = 0; i < 10; i++) {
                    for (ReceivedMessage m : consumer.poll(Duration.ofSeconds(1))) {
                        System.out.println(m.getPartition() + ":" + m.getOffset() + " " + m.getTag() + " "
                                + m.getBodyAsString());
                    }
                }
            }
            // END README poll
        } finally {
            System.setOut(stdout);
        }
        long created = printed.toString("UTF-8").lines().filter(l -> l.contains(" created ")).count();
        assertEquals(501, created, "every message tagged created, once");

        // BEGIN README listener
        ImagoConsumer consumer = new ImagoConsumer(ConsumerConfig.builder(broker, "audit", "orders")
                .mode(ConsumeMode.BROADCAST)
                .memberId("audit-1")
                .build());
        consumer.registerListener(msgs -> {
            msgs.forEach(m -> System.out.println(m.getKey() + " " + m.getBodyAsString()));
            return ConsumeStatus.CONSUME_SUCCESS;
        });
        consumer.start();
        Thread.sleep(3000);
        consumer.close();
        // END README listener

        // BEGIN README admin
        try (ImagoAdmin admin = new ImagoAdmin(broker)) {
            System.out.println(admin.version());
            System.out.println(admin.stats("orders"));          // min and max offset per partition
            System.out.println(admin.stats("group:billing"));   // committed, lag, owner per partition
            System.out.println(admin.reset("billing", "orders", -1,
                    ImagoAdmin.atTime(System.currentTimeMillis() - 3_600_000)));
            System.out.println(admin.fetchCommitted("billing", "orders", 0));
        }
        // END README admin

        // BEGIN README errors
        try (ImagoProducer producer = new ImagoProducer(broker)) {
            producer.send(Message.builder("orders").body("x").partition(99).build());
        } catch (BadRequestException e) {
            System.out.println(e.getCode() + " " + e.getMessage());
            // 400 partition 99 out of range, topic orders has 4 partitions
        }
        // END README errors
    }

    @Test
    void readmeShowsExactlyTheCodeThatRunsHere() throws Exception {
        String dir = System.getProperty("imago.client.dir", ".");
        Path readme = Paths.get(dir, "README.md");
        Path self = Paths.get(dir, "src/test/java/io/imago/client/ReadmeExamplesTest.java");
        String md = Files.readString(readme);
        List<String> blocks = new ArrayList<>();
        for (String part : md.split("```java\n")) {
            int end = part.indexOf("```");
            if (end >= 0 && blocks.size() < 1000 && md.contains("```java\n" + part.substring(0, end))) {
                blocks.add(part.substring(0, end));
            }
        }
        List<String> src = Files.readAllLines(self);
        int snippets = 0;
        for (int i = 0; i < src.size(); i++) {
            String line = src.get(i).trim();
            if (!line.startsWith("// BEGIN README ")) {
                continue;
            }
            int indent = src.get(i).indexOf('/');
            StringBuilder sb = new StringBuilder();
            for (int j = i + 1; !src.get(j).trim().startsWith("// END README "); j++) {
                String l = src.get(j);
                sb.append(l.length() >= indent ? l.substring(indent) : l.trim()).append('\n');
            }
            snippets++;
            assertTrue(blocks.contains(sb.toString()), "README.md lacks this snippet verbatim:\n" + sb);
        }
        assertEquals(5, snippets);
    }
}
