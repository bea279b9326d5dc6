package io.imago.client;

/** Where a sent message was stored: its message id, partition and logical offset. */
public final class SendResult {
    private final long msgId;
    private final int partition;
    private final long offset;

    public SendResult(long msgId, int partition, long offset) {
        this.msgId = msgId;
        this.partition = partition;
        this.offset = offset;
    }

    /** The message id, an unsigned 64-bit value (use {@link #getMsgIdString()} to print it). */
    public long getMsgId() {
        return msgId;
    }

    /** The message id as an unsigned decimal, as the broker writes it. */
    public String getMsgIdString() {
        return Long.toUnsignedString(msgId);
    }

    public int getPartition() {
        return partition;
    }

    /** The logical offset in the partition: 0 for the first message, then 1, 2, ... */
    public long getOffset() {
        return offset;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof SendResult)) {
            return false;
        }
        SendResult r = (SendResult) o;
        return msgId == r.msgId && partition == r.partition && offset == r.offset;
    }

    @Override
    public int hashCode() {
        return Long.hashCode(msgId) * 31 + partition * 17 + Long.hashCode(offset);
    }

    @Override
    public String toString() {
        return "SendResult{msgId=" + getMsgIdString() + ", partition=" + partition + ", offset=" + offset + "}";
    }
}
