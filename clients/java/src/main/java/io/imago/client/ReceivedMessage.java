package io.imago.client;

import java.nio.charset.StandardCharsets;
import java.util.Map;

/** A consumed message: one record of a {@code get} reply, CRC-checked. */
public final class ReceivedMessage {
    private final String topic;
    private final int partition;
    private final long offset;
    private final long msgId;
    private final long storeTimestamp;
    private final long bornTimestamp;
    private final int flag;
    private final String tag;
    private final Map<String, String> properties;
    private final byte[] body;

    public ReceivedMessage(String topic, int partition, long offset, long msgId, long storeTimestamp,
            long bornTimestamp, int flag, String tag, Map<String, String> properties, byte[] body) {
        this.topic = topic;
        this.partition = partition;
        this.offset = offset;
        this.msgId = msgId;
        this.storeTimestamp = storeTimestamp;
        this.bornTimestamp = bornTimestamp;
        this.flag = flag;
        this.tag = tag;
        this.properties = properties;
        this.body = body;
    }

    public String getTopic() {
        return topic;
    }

    public int getPartition() {
        return partition;
    }

    public long getOffset() {
        return offset;
    }

    /** The message id (unsigned 64-bit), as in the put reply. */
    public long getMsgId() {
        return msgId;
    }

    public String getMsgIdString() {
        return Long.toUnsignedString(msgId);
    }

    /** When the broker appended the record (Unix ms). */
    public long getStoreTimestamp() {
        return storeTimestamp;
    }

    /** When the broker received the put (Unix ms). */
    public long getBornTimestamp() {
        return bornTimestamp;
    }

    /** The put's flag as sent (bit 0: had a tag, bit 1: had properties). */
    public int getFlag() {
        return flag;
    }

    /** The tag, or null when the message had none. */
    public String getTag() {
        return tag;
    }

    /** The properties (the key included, as {@code KEYS}); unmodifiable, empty when none. */
    public Map<String, String> getProperties() {
        return properties;
    }

    /** The key (property {@code KEYS}), or null. */
    public String getKey() {
        return properties.get(Message.KEYS);
    }

    /** The payload; the array is shared, do not modify it. */
    public byte[] getBody() {
        return body;
    }

    /** The payload decoded as UTF-8. */
    public String getBodyAsString() {
        return new String(body, StandardCharsets.UTF_8);
    }

    @Override
    public String toString() {
        return "ReceivedMessage{topic=" + topic + ", partition=" + partition + ", offset=" + offset
                + ", msgId=" + getMsgIdString() + ", tag=" + tag + ", properties=" + properties
                + ", body=" + body.length + " bytes}";
    }
}
