package io.imago.client;

/** How a group's members share a topic. */
public enum ConsumeMode {
    /** The members share the partitions: each message goes to one member of the group (RocketMQ CLUSTERING, Kafka groups). */
    CLUSTER,
    /** Every member gets every partition, with offsets of its own: each message goes to every member. */
    BROADCAST;

    String wire() {
        return this == CLUSTER ? "cluster" : "broadcast";
    }
}
