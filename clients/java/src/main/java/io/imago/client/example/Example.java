package io.imago.client.example;

import io.imago.client.ConsumeStatus;
import io.imago.client.ConsumerConfig;
import io.imago.client.ImagoAdmin;
import io.imago.client.ImagoConsumer;
import io.imago.client.ImagoProducer;
import io.imago.client.Message;
import io.imago.client.Partitioner;
import io.imago.client.ProducerConfig;
import io.imago.client.SendResult;
import io.imago.client.StartPosition;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;

/**
 * Produces N messages, then consumes them with two members of one consumer group.
 *
 * <pre>
 * java -cp target/imago-client.jar io.imago.client.example.Example [host:port] [N]
 * </pre>
 *
 * Defaults: 127.0.0.1:8123 and 1000. Exits with 0 when every message was consumed.
 */
public final class Example {
    private Example() {
    }

    public static void main(String[] args) throws Exception {
        String broker = args.length > 0 ? args[0] : "127.0.0.1:8123";
        int n = args.length > 1 ? Integer.parseInt(args[1]) : 1000;
        String topic = "example";
        String group = "example-group";
        String run = Long.toString(System.currentTimeMillis());

        // 1. Produce: keyed messages (same key, same partition), pipelined with sendAsync.
        ProducerConfig pc = ProducerConfig.builder(broker).partitioner(Partitioner.KEY_HASH).build();
        try (ImagoProducer producer = new ImagoProducer(pc)) {
            List<CompletableFuture<SendResult>> sends = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                Message m = Message.builder(topic)
                        .body("message " + i + " of run " + run)
                        .tag(i % 2 == 0 ? "even" : "odd")
                        .key("customer-" + (i % 10))
                        .property("run", run)
                        .build();
                sends.add(producer.sendAsync(m));
            }
            producer.flush();
            SendResult last = sends.get(n - 1).join();
            System.out.println("sent " + n + " messages to " + topic + "; the last: " + last);
        }

        // 2. Consume with two members of one group; each message goes to one of them.
        Set<String> seen = ConcurrentHashMap.newKeySet();
        AtomicInteger[] perMember = {new AtomicInteger(), new AtomicInteger()};
        List<ImagoConsumer> consumers = new ArrayList<>();
        for (int c = 0; c < 2; c++) {
            ConsumerConfig cc = ConsumerConfig.builder(broker, group, topic)
                    .memberId("example-member-" + c)
                    .start(StartPosition.EARLIEST)
                    .pollWait(Duration.ofMillis(500))
                    .build();
            ImagoConsumer consumer = new ImagoConsumer(cc);
            AtomicInteger count = perMember[c];
            consumer.registerListener(msgs -> {
                for (var m : msgs) {
                    if (run.equals(m.getProperties().get("run"))) {
                        seen.add(m.getPartition() + ":" + m.getOffset());
                        count.incrementAndGet();
                    }
                }
                return ConsumeStatus.CONSUME_SUCCESS;
            });
            consumer.start();
            consumers.add(consumer);
        }
        long deadline = System.currentTimeMillis() + 30_000;
        while (seen.size() < n && System.currentTimeMillis() < deadline) {
            Thread.sleep(100);
        }
        for (ImagoConsumer c : consumers) {
            c.close();
        }
        System.out.println("consumed " + seen.size() + " of " + n + " messages (member 0: " + perMember[0]
                + ", member 1: " + perMember[1] + ")");

        // 3. The group's committed offsets and lag, as the broker reports them.
        try (ImagoAdmin admin = new ImagoAdmin(broker)) {
            Map<String, String> stats = admin.stats("group:" + group);
            System.out.println("group lag: " + stats.get("group:" + group + ":" + topic + ":lag")
                    + ", broker " + admin.version());
        }
        System.exit(seen.size() == n ? 0 : 1);
    }
}
