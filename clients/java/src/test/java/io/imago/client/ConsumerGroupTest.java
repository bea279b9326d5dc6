package io.imago.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.OptionalLong;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

@Timeout(60)
class ConsumerGroupTest {
    static TestBroker broker;
    static ImagoAdmin admin;
    static ImagoProducer producer;

    @BeforeAll
    static void startBroker() throws Exception {
        broker = TestBroker.start();
        admin = new ImagoAdmin(broker.address());
        producer = new ImagoProducer(broker.address());
    }

    @AfterAll
    static void stopBroker() {
        producer.close();
        admin.close();
        broker.close();
    }

    static ConsumerConfig.Builder config(String group, String topic) {
        return ConsumerConfig.builder(broker.address(), group, topic).pollWait(Duration.ofMillis(1000));
    }

    /** Sends {@code n} messages (round-robin unless a tag function says otherwise) and returns their keys. */
    static Set<String> produce(String topic, int n, String prefix) {
        List<CompletableFuture<SendResult>> fs = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            fs.add(producer.sendAsync(Message.builder(topic).body(prefix + i).build()));
        }
        Set<String> keys = new HashSet<>();
        for (CompletableFuture<SendResult> f : fs) {
            keys.add(PollLoop.key(f.join()));
        }
        return keys;
    }

    static long sumMax(String topic) {
        return admin.maxOffsets(topic).values().stream().mapToLong(Long::longValue).sum();
    }

    @Test
    void twoClusterConsumersShareThePartitionsAndConsumeEveryMessageAcrossRebalances() throws Exception {
        String topic = "cluster-two";
        Set<String> expected = new HashSet<>(produce(topic, 2000, "first-"));
        Map<String, Integer> seen = new ConcurrentHashMap<>();
        PollLoop a = new PollLoop(config("g-two", topic).memberId("member-a").build(), seen);
        PollLoop.await(Duration.ofSeconds(20), "member a consuming", () -> a.deliveries.get() >= 200);
        PollLoop b = new PollLoop(config("g-two", topic).memberId("member-b").build(), seen);
        // More messages while the group rebalances and both members consume.
        for (int round = 0; round < 4; round++) {
            expected.addAll(produce(topic, 500, "round" + round + "-"));
            Thread.sleep(100);
        }
        // A dropped connection on each side is re-established and consumption goes on.
        a.consumer.fetchConnection().closeSocket();
        b.consumer.controlConnection().closeSocket();
        expected.addAll(produce(topic, 500, "late-"));
        PollLoop.awaitAll(Duration.ofSeconds(40), seen, expected);
        PollLoop.await(Duration.ofSeconds(15), "partitions split 2 and 2", () -> {
            Set<Integer> pa = a.consumer.assignment();
            Set<Integer> pb = b.consumer.assignment();
            Set<Integer> all = new TreeSet<>(pa);
            all.addAll(pb);
            return pa.size() == 2 && pb.size() == 2 && all.equals(Set.of(0, 1, 2, 3));
        });
        assertEquals(Set.of(0, 1), a.consumer.assignment(), "members sorted by id get ranges in order");
        assertTrue(b.deliveries.get() > 0, "member b consumed too");
        assertEquals(expected, seen.keySet(), "nothing lost, nothing foreign");
        assertEquals(4500, expected.size());
        Map<String, String> stats = admin.stats("group:g-two");
        assertEquals("2", stats.get("group:g-two:" + topic + ":members"));
        assertEquals("cluster", stats.get("group:g-two:" + topic + ":mode"));
        a.close();
        b.close();
        // Everything consumed was committed by close (the commit follows the rebalance a's leave caused).
        Map<Integer, Long> max = admin.maxOffsets(topic);
        for (int p = 0; p < 4; p++) {
            assertEquals(OptionalLong.of(max.get(p)), admin.fetchCommitted("g-two", topic, p), "partition " + p);
        }
        assertEquals("0", admin.stats("group:g-two").get("group:g-two:" + topic + ":lag"));
    }

    @Test
    void whenAMemberLeavesTheOtherTakesOverItsPartitions() throws Exception {
        String topic = "takeover";
        produce(topic, 40, "pre-");
        Map<String, Integer> seen = new ConcurrentHashMap<>();
        PollLoop a = new PollLoop(config("g-takeover", topic).memberId("a").build(), seen);
        PollLoop b = new PollLoop(config("g-takeover", topic).memberId("b").build(), seen);
        PollLoop.await(Duration.ofSeconds(15), "2 and 2",
                () -> a.consumer.assignment().size() == 2 && b.consumer.assignment().size() == 2);
        a.close();
        PollLoop.await(Duration.ofSeconds(15), "b owns all four", () -> b.consumer.assignment().size() == 4);
        Set<String> later = produce(topic, 200, "post-");
        PollLoop.awaitAll(Duration.ofSeconds(20), b.seen, later);
        b.close();
    }

    @Test
    void tagFilterDeliversOnlyMatchingTagsAndSkipsTheRest() throws Exception {
        String topic = "tagged";
        String[] tags = {"a", "b", "c", null};
        Set<String> wanted = new HashSet<>();
        List<CompletableFuture<SendResult>> fs = new ArrayList<>();
        List<String> tagOf = new ArrayList<>();
        for (int i = 0; i < 400; i++) {
            String tag = tags[i % 4];
            fs.add(producer.sendAsync(Message.builder(topic).tag(tag).body("m" + i).build()));
            tagOf.add(tag);
        }
        for (int i = 0; i < fs.size(); i++) {
            String t = tagOf.get(i);
            if ("a".equals(t) || "c".equals(t)) {
                wanted.add(PollLoop.key(fs.get(i).join()));
            }
        }
        Map<String, String> tagByKey = new ConcurrentHashMap<>();
        try (ImagoConsumer c = new ImagoConsumer(config("g-tags", topic).tags("a", "c").build())) {
            Set<String> got = new HashSet<>();
            long deadline = System.nanoTime() + Duration.ofSeconds(20).toNanos();
            while (!got.containsAll(wanted) && System.nanoTime() < deadline) {
                for (ReceivedMessage m : c.poll(Duration.ofMillis(300))) {
                    got.add(PollLoop.key(m));
                    tagByKey.put(PollLoop.key(m), m.getTag());
                }
            }
            assertEquals(wanted, got);
            assertEquals(Set.of("a", "c"), new HashSet<>(tagByKey.values()));
            // Skipped records move the position on (301), up to the end of each partition.
            Map<Integer, Long> max = admin.maxOffsets(topic);
            PollLoop.await(Duration.ofSeconds(10), "positions at the end", () -> {
                c.poll(Duration.ofMillis(100));
                for (int p = 0; p < 4; p++) {
                    if (c.position(p) < max.get(p) - 1) {
                        return false;
                    }
                }
                return true;
            });
            // A message with a wanted tag sent now arrives through the waiting long poll.
            SendResult r = producer.send(Message.builder(topic).tag("c").body("late").build());
            List<ReceivedMessage> late = new ArrayList<>();
            PollLoop.await(Duration.ofSeconds(10), "late message", () -> {
                late.addAll(c.poll(Duration.ofMillis(200)));
                return !late.isEmpty();
            });
            assertEquals(PollLoop.key(r), PollLoop.key(late.get(0)));
        }
    }

    @Test
    void broadcastDeliversEveryMessageToEveryMember() throws Exception {
        String topic = "broadcast";
        Set<String> expected = produce(topic, 400, "b-");
        PollLoop x = new PollLoop(config("g-bc", topic).mode(ConsumeMode.BROADCAST).memberId("x").build());
        PollLoop y = new PollLoop(config("g-bc", topic).mode(ConsumeMode.BROADCAST).memberId("y").build());
        PollLoop.awaitAll(Duration.ofSeconds(20), x.seen, expected);
        PollLoop.awaitAll(Duration.ofSeconds(20), y.seen, expected);
        assertEquals(Set.of(0, 1, 2, 3), x.consumer.assignment());
        assertEquals(Set.of(0, 1, 2, 3), y.consumer.assignment());
        x.close();
        y.close();
        // Each member's offsets are its own.
        Map<Integer, Long> max = admin.maxOffsets(topic);
        for (int p = 0; p < 4; p++) {
            assertEquals(OptionalLong.of(max.get(p)), admin.fetchCommitted("g-bc", topic, p, "x"));
            assertEquals(OptionalLong.of(max.get(p)), admin.fetchCommitted("g-bc", topic, p, "y"));
        }
    }

    @Test
    void joiningInTheOtherModeIsAConflict() throws Exception {
        String topic = "mode-clash";
        produce(topic, 1, "m");
        try (ImagoConsumer cluster = new ImagoConsumer(config("g-clash", topic).build());
                ImagoConsumer bc = new ImagoConsumer(config("g-clash", topic).mode(ConsumeMode.BROADCAST).build())) {
            cluster.poll(Duration.ofMillis(100));
            ConflictException e = assertThrows(ConflictException.class, () -> bc.poll(Duration.ofMillis(100)));
            assertEquals(409, e.getCode());
            assertEquals("group g-clash on topic mode-clash is cluster", e.getMessage());
        }
    }

    @Test
    void listenerGetsEveryMessageAndReconsumeLaterDeliversAgain() throws Exception {
        String topic = "listener";
        for (int i = 0; i < 100; i++) {
            producer.send(Message.builder(topic).body(i == 50 ? "fail-once" : "m" + i).partition(0).build());
        }
        Map<Long, Integer> delivered = new ConcurrentHashMap<>();
        AtomicInteger failures = new AtomicInteger();
        ImagoConsumer c = new ImagoConsumer(config("g-listener", topic).consumeBatchSize(10)
                .reconsumeDelay(Duration.ofMillis(100)).build());
        c.registerListener(msgs -> {
            for (ReceivedMessage m : msgs) {
                if (m.getBodyAsString().equals("fail-once") && failures.getAndIncrement() == 0) {
                    return ConsumeStatus.RECONSUME_LATER;
                }
            }
            for (ReceivedMessage m : msgs) {
                delivered.merge(m.getOffset(), 1, Integer::sum);
            }
            return ConsumeStatus.CONSUME_SUCCESS;
        });
        c.start();
        PollLoop.await(Duration.ofSeconds(20), "100 messages", () -> delivered.size() == 100);
        c.close();
        assertEquals(2, failures.get(), "the failed batch came again");
        for (long o = 0; o < 100; o++) {
            assertEquals(1, delivered.get(o), "offset " + o + " processed once");
        }
        assertEquals(OptionalLong.of(100), admin.fetchCommitted("g-listener", topic, 0));
    }

    @Test
    void startTimeAndStartOffsetRewindTheGroupBeforeJoining() throws Exception {
        String topic = "rewind";
        produce(topic, 40, "old-");
        Thread.sleep(50);
        long t = System.currentTimeMillis();
        Thread.sleep(50);
        Set<String> recent = produce(topic, 40, "new-");
        try (PollLoop loop = new PollLoop(config("g-time", topic).startTimeMs(t).build())) {
            PollLoop.awaitAll(Duration.ofSeconds(15), loop.seen, recent);
            Thread.sleep(300);
            assertEquals(recent, loop.seen.keySet(), "only messages stored since t");
        }
        try (PollLoop loop = new PollLoop(config("g-offset", topic).startOffset(15).build())) {
            Set<String> fromFifteen = new HashSet<>();
            for (int p = 0; p < 4; p++) {
                for (int o = 15; o < 20; o++) {
                    fromFifteen.add(p + ":" + o);
                }
            }
            PollLoop.awaitAll(Duration.ofSeconds(15), loop.seen, fromFifteen);
            Thread.sleep(300);
            assertEquals(fromFifteen, loop.seen.keySet());
        }
    }

    @Test
    void latestStartSkipsMessagesSentBeforeJoining() throws Exception {
        String topic = "latest";
        produce(topic, 20, "before-");
        try (ImagoConsumer c = new ImagoConsumer(config("g-latest", topic).start(StartPosition.LATEST).build())) {
            c.poll(Duration.ofMillis(200)); // joins
            Set<String> after = produce(topic, 20, "after-");
            Set<String> got = new HashSet<>();
            long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
            while (!got.containsAll(after) && System.nanoTime() < deadline) {
                c.poll(Duration.ofMillis(200)).forEach(m -> {
                    got.add(PollLoop.key(m));
                    assertTrue(m.getBodyAsString().startsWith("after-"), m.getBodyAsString());
                });
            }
            assertEquals(after, got);
        }
    }

    @Test
    void commitSyncStoresPositionsAndTheGroupResumesThere() throws Exception {
        String topic = "manual-commit";
        produce(topic, 400, "m");
        Map<Integer, Long> positions = new HashMap<>();
        int first = 0;
        try (ImagoConsumer c = new ImagoConsumer(config("g-manual", topic).autoCommit(false).build())) {
            while (first < 150) {
                first += c.poll(Duration.ofMillis(500)).size();
            }
            c.commitSync();
            for (int p : c.assignment()) {
                positions.put(p, c.position(p));
            }
        }
        long committed = 0;
        for (int p = 0; p < 4; p++) {
            OptionalLong o = admin.fetchCommitted("g-manual", topic, p);
            assertEquals(OptionalLong.of(positions.get(p)), o, "partition " + p);
            committed += o.getAsLong();
        }
        assertEquals(first, committed);
        int rest = 0;
        try (ImagoConsumer c = new ImagoConsumer(config("g-manual", topic).autoCommit(false).build())) {
            long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
            while (rest < 400 - first && System.nanoTime() < deadline) {
                for (ReceivedMessage m : c.poll(Duration.ofMillis(300))) {
                    assertTrue(m.getOffset() >= positions.get(m.getPartition()), "resumed at the commit");
                    rest++;
                }
            }
        }
        assertEquals(400 - first, rest);
    }

    @Test
    void aConsumerWaitsForATopicThatDoesNotExistYet() throws Exception {
        String topic = "created-later";
        try (ImagoConsumer c = new ImagoConsumer(config("g-later", topic).build())) {
            assertTrue(c.poll(Duration.ofMillis(300)).isEmpty());
            Set<String> sent = produce(topic, 10, "x");
            Set<String> got = new HashSet<>();
            long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
            while (!got.containsAll(sent) && System.nanoTime() < deadline) {
                c.poll(Duration.ofMillis(300)).forEach(m -> got.add(PollLoop.key(m)));
            }
            assertEquals(sent, got);
        }
    }

    @Test
    void autoCommitCommitsAtTheIntervalWhileTheConsumerRuns() throws Exception {
        String topic = "auto-commit";
        produce(topic, 300, "a");
        Map<Integer, Long> max = admin.maxOffsets(topic);
        try (ImagoConsumer c = new ImagoConsumer(config("g-auto", topic).autoCommitInterval(Duration.ofMillis(200))
                .pollWait(Duration.ofMillis(100)).build());
                ImagoConsumer manual = new ImagoConsumer(config("g-no-auto", topic).autoCommit(false)
                        .pollWait(Duration.ofMillis(100)).build())) {
            int got = 0;
            int gotManual = 0;
            long deadline = System.nanoTime() + Duration.ofSeconds(15).toNanos();
            while ((got < 300 || gotManual < 300) && System.nanoTime() < deadline) {
                got += c.poll(Duration.ofMillis(100)).size();
                gotManual += manual.poll(Duration.ofMillis(100)).size();
            }
            assertEquals(300, got);
            assertEquals(300, gotManual);
            // Still open: the interval commits, driven by further polls.
            PollLoop.await(Duration.ofSeconds(10), "offsets committed by the interval", () -> {
                c.poll(Duration.ofMillis(100));
                manual.poll(Duration.ofMillis(100));
                for (int p = 0; p < 4; p++) {
                    if (!admin.fetchCommitted("g-auto", topic, p).equals(OptionalLong.of(max.get(p)))) {
                        return false;
                    }
                }
                return true;
            });
            // Without auto-commit nothing moves until commitSync: the join committed the start (0).
            for (int p = 0; p < 4; p++) {
                assertEquals(OptionalLong.of(0), admin.fetchCommitted("g-no-auto", topic, p), "partition " + p);
            }
            manual.commitSync();
            for (int p = 0; p < 4; p++) {
                assertEquals(OptionalLong.of(max.get(p)), admin.fetchCommitted("g-no-auto", topic, p));
            }
        }
    }

    @Test
    void iteratingDeliversEveryMessageAndEndsWhenTheConsumerIsClosed() throws Exception {
        String topic = "iterate";
        Set<String> sent = produce(topic, 500, "it-");
        ImagoConsumer c = new ImagoConsumer(config("g-iter", topic).pollWait(Duration.ofMillis(200)).build());
        Set<String> got = ConcurrentHashMap.newKeySet();
        AtomicInteger n = new AtomicInteger();
        Thread reader = new Thread(() -> {
            for (ReceivedMessage m : c) {
                got.add(PollLoop.key(m));
                n.incrementAndGet();
            }
        });
        reader.start();
        PollLoop.await(Duration.ofSeconds(20), "all 500 messages", () -> got.containsAll(sent));
        c.close(); // from another thread: the loop ends
        reader.join(10_000);
        assertTrue(!reader.isAlive(), "the for loop ended at close()");
        assertEquals(500, n.get(), "each message once");
        Map<Integer, Long> max = admin.maxOffsets(topic);
        for (int p = 0; p < 4; p++) {
            assertEquals(OptionalLong.of(max.get(p)), admin.fetchCommitted("g-iter", topic, p));
        }
    }
}
