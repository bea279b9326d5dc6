package io.imago.client;

/** Where a partition without a committed offset begins for a group. */
public enum StartPosition {
    /** At the oldest message still held. */
    EARLIEST,
    /** After the last message: only messages sent from now on. */
    LATEST;

    String wire() {
        return this == EARLIEST ? "earliest" : "latest";
    }
}
