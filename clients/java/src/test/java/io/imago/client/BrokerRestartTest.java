package io.imago.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;

/** The broker restarts on the same address (a fixed port chosen by the test); clients reconnect. */
@Timeout(80)
class BrokerRestartTest {

    @Test
    void producerAndTwoGroupMembersCarryOnAcrossABrokerRestart() throws Exception {
        try (TestBroker broker = TestBroker.startOnFixedPort()) {
            String addr = broker.address();
            String topic = "restart";
            ProducerConfig pc = ProducerConfig.builder(addr).retries(10).retryBackoff(Duration.ofMillis(100)).build();
            try (ImagoProducer producer = new ImagoProducer(pc); ImagoAdmin admin = new ImagoAdmin(addr)) {
                Set<String> expected = ConcurrentHashMap.newKeySet();
                List<CompletableFuture<SendResult>> first = new ArrayList<>();
                for (int i = 0; i < 1500; i++) {
                    first.add(producer.sendAsync(Message.builder(topic).body("before-" + i).build()));
                }
                first.forEach(f -> expected.add(PollLoop.key(f.join())));

                Map<String, Integer> seen = new ConcurrentHashMap<>();
                ConsumerConfig.Builder cc = ConsumerConfig.builder(addr, "g-restart", topic)
                        .pollWait(Duration.ofMillis(1000));
                PollLoop a = new PollLoop(cc.memberId("a").build(), seen);
                PollLoop b = new PollLoop(cc.memberId("b").build(), seen);
                PollLoop.await(Duration.ofSeconds(20), "some consumed", () -> seen.size() >= 500);

                // Keep sending while the broker restarts.
                AtomicReference<Throwable> sendError = new AtomicReference<>();
                Thread sender = new Thread(() -> {
                    try {
                        List<CompletableFuture<SendResult>> fs = new ArrayList<>();
                        for (int i = 0; i < 1500; i++) {
                            fs.add(producer.sendAsync(Message.builder(topic).body("during-" + i).build()));
                            if (i % 100 == 99) {
                                Thread.sleep(30);
                            }
                        }
                        for (CompletableFuture<SendResult> f : fs) {
                            expected.add(PollLoop.key(f.join()));
                        }
                    } catch (Throwable t) {
                        sendError.set(t);
                    }
                });
                sender.start();
                Thread.sleep(100);
                long connectsBefore = producer.connection().connectCount();
                broker.restart();
                assertEquals(addr, broker.address());
                sender.join(40_000);
                if (sendError.get() != null) {
                    throw new AssertionError("sends failed across the restart", sendError.get());
                }
                assertEquals(3000, expected.size(), "every send acknowledged once");
                SendResult after = producer.send(Message.builder(topic).body("after").build());
                expected.add(PollLoop.key(after));
                assertTrue(producer.connection().connectCount() > connectsBefore, "the producer reconnected");

                PollLoop.awaitAll(Duration.ofSeconds(40), seen, expected);
                PollLoop.await(Duration.ofSeconds(15), "both members joined again", () -> "2".equals(
                        admin.stats("group:g-restart").get("group:g-restart:" + topic + ":members")));
                a.close();
                b.close();
                assertTrue(seen.keySet().containsAll(expected));
            }
        }
    }
}
