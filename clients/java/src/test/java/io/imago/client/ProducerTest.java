package io.imago.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.imago.client.internal.Wire;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ConcurrentLinkedQueue;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(60)
class ProducerTest {
    static TestBroker broker;
    static ImagoAdmin admin;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = TestBroker.start();
        admin = new ImagoAdmin(broker.address());
    }

    @AfterAll
    static void stopBroker() {
        admin.close();
        broker.close();
    }

    @Test
    void sendReturnsTheStoredPartitionOffsetAndMessageId() {
        try (ImagoProducer p = new ImagoProducer(broker.address())) {
            SendResult a = p.send(Message.builder("send-basic").body("one").partition(2).build());
            SendResult b = p.send(Message.builder("send-basic").body("two").partition(2).build());
            assertEquals(2, a.getPartition());
            assertEquals(0, a.getOffset());
            assertEquals(1, b.getOffset());
            assertTrue(Long.compareUnsigned(b.getMsgId(), a.getMsgId()) > 0, "message ids increase");
            assertEquals(Map.of(0, 0L, 1, 0L, 2, 2L, 3, 0L), admin.maxOffsets("send-basic"));
        }
    }

    @Test
    void asyncSendsArePipelinedAndStoredInSendOrder() {
        int n = 3000;
        try (ImagoProducer p = new ImagoProducer(broker.address())) {
            List<CompletableFuture<SendResult>> fs = new ArrayList<>();
            ConcurrentLinkedQueue<Long> completionOrder = new ConcurrentLinkedQueue<>();
            for (int i = 0; i < n; i++) {
                CompletableFuture<SendResult> f = p.sendAsync(
                        Message.builder("async-order").body("m" + i).partition(1).build());
                f.thenAccept(r -> completionOrder.add(r.getOffset()));
                fs.add(f);
            }
            p.flush();
            for (int i = 0; i < n; i++) {
                SendResult r = fs.get(i).join();
                assertEquals(1, r.getPartition());
                assertEquals(i, r.getOffset(), "message " + i + " stored in send order");
            }
            List<Long> order = new ArrayList<>(completionOrder);
            for (int i = 0; i < order.size(); i++) {
                assertEquals(i, order.get(i).longValue(), "futures complete in reply order");
            }
            assertEquals(1, p.connection().connectCount(), "all sends on one connection");
        }
        // The records read back carry the bodies in the same order.
        try (ImagoConsumer c = new ImagoConsumer(ConsumerConfig.builder(broker.address(), "async-order-reader",
                "async-order").pollWait(Duration.ofMillis(200)).build())) {
            List<ReceivedMessage> got = new ArrayList<>();
            long deadline = System.nanoTime() + 20_000_000_000L;
            while (got.size() < n && System.nanoTime() < deadline) {
                got.addAll(c.poll(Duration.ofMillis(500)));
            }
            assertEquals(n, got.size());
            for (int i = 0; i < n; i++) {
                assertEquals("m" + i, got.get(i).getBodyAsString());
                assertEquals(i, got.get(i).getOffset());
            }
        }
    }

    @Test
    void messagesWithTheSameKeyGoToOnePartitionInOrder() {
        ProducerConfig cfg = ProducerConfig.builder(broker.address()).partitioner(Partitioner.KEY_HASH).build();
        try (ImagoProducer p = new ImagoProducer(cfg)) {
            assertEquals(4, p.partitionsFor("keyed"), "default_partitions before the topic exists");
            Map<String, List<SendResult>> byKey = new HashMap<>();
            for (int i = 0; i < 200; i++) {
                String key = "customer-" + (i % 8);
                SendResult r = p.send(Message.builder("keyed").key(key).body("m" + i).build());
                byKey.computeIfAbsent(key, k -> new ArrayList<>()).add(r);
            }
            Set<Integer> used = new HashSet<>();
            for (Map.Entry<String, List<SendResult>> e : byKey.entrySet()) {
                int expected = Wire.partitionForKey(e.getKey(), 4);
                long last = -1;
                for (SendResult r : e.getValue()) {
                    assertEquals(expected, r.getPartition(), "key " + e.getKey());
                    assertTrue(r.getOffset() > last, "in order within the partition");
                    last = r.getOffset();
                }
                used.add(expected);
            }
            assertTrue(used.size() > 1, "keys spread over partitions: " + used);
            assertEquals(4, admin.partitionCount("keyed"));
        }
    }

    @Test
    void roundRobinSpreadsMessagesOverAllPartitionsAndExplicitPartitionWins() {
        try (ImagoProducer p = new ImagoProducer(broker.address())) {
            Map<Integer, Integer> counts = new HashMap<>();
            for (int i = 0; i < 40; i++) {
                counts.merge(p.send(new Message("round-robin", ("m" + i).getBytes())).getPartition(), 1, Integer::sum);
            }
            assertEquals(Map.of(0, 10, 1, 10, 2, 10, 3, 10), counts);
            for (int i = 0; i < 5; i++) {
                assertEquals(3, p.send(Message.builder("round-robin").body("x").partition(3).build()).getPartition());
            }
        }
    }

    @Test
    void tagKeyPropertiesAndFlagRoundTripThroughAConsumer() {
        long before = System.currentTimeMillis();
        try (ImagoProducer p = new ImagoProducer(broker.address())) {
            p.send(Message.builder("roundtrip").body("payload-1").tag("created").key("order-1")
                    .property("trace", "abc").property("empty", "").flag(0x100).partition(0).build());
            p.send(Message.builder("roundtrip").body(new byte[0]).partition(0).build());
            p.send(new Message("roundtrip", "tagonly", "payload-3".getBytes()));
        }
        try (ImagoConsumer c = new ImagoConsumer(ConsumerConfig.builder(broker.address(), "rt", "roundtrip")
                .pollWait(Duration.ofMillis(200)).build())) {
            List<ReceivedMessage> got = new ArrayList<>();
            long deadline = System.nanoTime() + 10_000_000_000L;
            while (got.size() < 3 && System.nanoTime() < deadline) {
                got.addAll(c.poll(Duration.ofMillis(300)));
            }
            assertEquals(3, got.size());
            got.sort((x, y) -> x.getBodyAsString().compareTo(y.getBodyAsString()));
            ReceivedMessage empty = got.get(0);
            assertEquals(0, empty.getBody().length);
            assertEquals(null, empty.getTag());
            assertEquals(0, empty.getFlag());
            ReceivedMessage m = got.get(1);
            assertEquals("payload-1", m.getBodyAsString());
            assertEquals("roundtrip", m.getTopic());
            assertEquals(0, m.getPartition());
            assertEquals(0, m.getOffset());
            assertEquals("created", m.getTag());
            assertEquals("order-1", m.getKey());
            assertEquals("abc", m.getProperties().get("trace"));
            assertEquals("", m.getProperties().get("empty"));
            assertEquals(0x103, m.getFlag(), "user bits kept, tag and properties bits set");
            assertTrue(m.getStoreTimestamp() >= before - 1000 && m.getBornTimestamp() >= before - 1000);
            assertEquals("tagonly", got.get(2).getTag());
            assertEquals(1, got.get(2).getFlag());
        }
    }

    @Test
    void brokerErrorsSurfaceAsTypedExceptionsWithTheBrokersCodeAndMessage() {
        try (ImagoProducer p = new ImagoProducer(broker.address())) {
            p.send(new Message("errors", "x".getBytes()));
            BadRequestException range = assertThrows(BadRequestException.class,
                    () -> p.send(Message.builder("errors").body("x").partition(9).build()));
            assertEquals(400, range.getCode());
            assertEquals("partition 9 out of range, topic errors has 4 partitions", range.getMessage());

            PayloadTooLargeException big = assertThrows(PayloadTooLargeException.class,
                    () -> p.send(Message.builder("errors").body(new byte[4194305]).build()));
            assertEquals(413, big.getCode());
            assertTrue(big.getMessage().contains("exceeds body_bytes_max 4194304"), big.getMessage());

            // sendAsync reports the same exception through its future.
            CompletionException ce = assertThrows(CompletionException.class,
                    () -> p.sendAsync(Message.builder("errors").body("x").partition(7).build()).join());
            assertInstanceOf(BadRequestException.class, ce.getCause());

            // The connection survives errors.
            assertEquals(1, p.send(Message.builder("errors").body("ok").partition(1).build()).getOffset() >= 0 ? 1 : 0);
            assertEquals(1, p.connection().connectCount());
        }
        NotFoundException unknown = assertThrows(NotFoundException.class,
                () -> admin.reset("g", "no-such-topic", -1, "earliest"));
        assertEquals(404, unknown.getCode());
        assertEquals("unknown topic no-such-topic", unknown.getMessage());
        BadRequestException beyond = assertThrows(BadRequestException.class, () -> admin.commit("g", "errors", 0, 99));
        assertTrue(beyond.getMessage().startsWith("offset 99 beyond max offset"), beyond.getMessage());
        assertThrows(BadRequestException.class, () -> admin.stats("no-such-item"));
    }

    @Test
    void sendsContinueAfterTheConnectionIsClosed() {
        try (ImagoProducer p = new ImagoProducer(broker.address())) {
            List<CompletableFuture<SendResult>> fs = new ArrayList<>();
            for (int i = 0; i < 500; i++) {
                fs.add(p.sendAsync(Message.builder("reconnect").body("a" + i).build()));
                if (i == 250) {
                    p.connection().closeSocket(); // as if the network dropped the connection
                }
            }
            p.flush();
            for (CompletableFuture<SendResult> f : fs) {
                f.join(); // retried after the drop: at-least-once, no failure
            }
            p.connection().closeSocket();
            SendResult after = p.send(Message.builder("reconnect").body("after").partition(0).build());
            assertEquals(0, after.getPartition());
            assertTrue(p.connection().connectCount() >= 2, "reconnected");
            long stored = admin.maxOffsets("reconnect").values().stream().mapToLong(Long::longValue).sum();
            assertTrue(stored >= 501, "every message stored at least once: " + stored);
        }
    }

    @Test
    void aProducerWithNoBrokerFailsWithAConnectionException() {
        ProducerConfig cfg = ProducerConfig.builder("127.0.0.1:1").retries(1).requestTimeout(Duration.ofMillis(300))
                .retryBackoff(Duration.ofMillis(10)).build();
        try (ImagoProducer p = new ImagoProducer(cfg)) {
            ImagoException e = assertThrows(ImagoException.class, () -> p.send(Message.builder("t").body("x").build()));
            assertTrue(e.getCode() == ImagoException.CONNECTION || e.getCode() == ImagoException.TIMEOUT, e.toString());
            assertNotEquals(0, e.getMessage().length());
        }
    }
}
