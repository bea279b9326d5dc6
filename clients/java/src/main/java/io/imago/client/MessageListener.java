package io.imago.client;

import java.util.List;

/**
 * Receives messages on the consumer's consume thread (see {@link ImagoConsumer#registerListener}).
 * Batches hold at most {@code consumeBatchSize} messages, in offset order per partition.
 * Returning {@link ConsumeStatus#RECONSUME_LATER}, returning null or throwing delivers the
 * batch again later (at-least-once).
 */
@FunctionalInterface
public interface MessageListener {
    ConsumeStatus consume(List<ReceivedMessage> messages);
}
