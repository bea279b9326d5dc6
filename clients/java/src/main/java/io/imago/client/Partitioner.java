package io.imago.client;

import io.imago.client.internal.Wire;

/**
 * Chooses the partition of a message that names none. Set it with
 * {@link ProducerConfig.Builder#partitioner(Partitioner)}; a message built with
 * {@link Message.Builder#partition(int)} bypasses it.
 */
@FunctionalInterface
public interface Partitioner {
    /**
     * The partition for {@code message}, in [0, partitionCount), or -1 to let the broker
     * choose (round-robin per topic).
     *
     * @param partitionCount the topic's partition count (from {@code stats <topic>}; for a topic
     *     that does not exist yet, the broker's {@code default_partitions}), or 0 when
     *     {@link #needsPartitionCount(Message)} returned false
     */
    int partition(Message message, int partitionCount);

    /** Whether {@link #partition(Message, int)} needs the partition count (one cached stats request). */
    default boolean needsPartitionCount(Message message) {
        return true;
    }

    /** The default: partition -1, so the broker spreads messages round-robin over the partitions. */
    Partitioner ROUND_ROBIN = new Partitioner() {
        @Override
        public int partition(Message message, int partitionCount) {
            return -1;
        }

        @Override
        public boolean needsPartitionCount(Message message) {
            return false;
        }

        @Override
        public String toString() {
            return "ROUND_ROBIN";
        }
    };

    /**
     * By key: {@code (CRC32(UTF-8 key) & 0x7FFFFFFF) % partitionCount}, so every message of a key
     * goes to one partition and stays in order (as long as the partition count does not change).
     * Messages without a key go round-robin.
     */
    Partitioner KEY_HASH = new Partitioner() {
        @Override
        public int partition(Message message, int partitionCount) {
            String key = message.getKey();
            return key == null ? -1 : Wire.partitionForKey(key, partitionCount);
        }

        @Override
        public boolean needsPartitionCount(Message message) {
            return message.getKey() != null;
        }

        @Override
        public String toString() {
            return "KEY_HASH";
        }
    };
}
