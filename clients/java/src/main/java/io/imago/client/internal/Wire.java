package io.imago.client.internal;

import io.imago.client.ImagoProtocolException;
import io.imago.client.ReceivedMessage;
import java.io.ByteArrayOutputStream;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.zip.CRC32;

/** Encoding and decoding of imago's wire formats (protocol.md). */
public final class Wire {
    /** {@code IMG} and record format version 1. */
    public static final int MAGIC = 0x494D4701;
    public static final int RECORD_HEADER = 64;
    private static final int NAME_MAX = 255;

    private Wire() {
    }

    /** Checks a topic, group or member name: 1 to 255 bytes of [A-Za-z0-9_.-], not starting with '.' or '-'. */
    public static String checkName(String kind, String name) {
        if (name == null) {
            throw new IllegalArgumentException(kind + " name is null");
        }
        if (name.isEmpty() || name.length() > NAME_MAX) {
            throw new IllegalArgumentException(kind + " name '" + name + "' must be 1 to 255 bytes");
        }
        for (int i = 0; i < name.length(); i++) {
            char c = name.charAt(i);
            boolean ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
                    || ((c == '.' || c == '-') && i > 0);
            if (!ok) {
                throw new IllegalArgumentException(kind + " name '" + name
                        + "' must be of [A-Za-z0-9_.-] and not start with '.' or '-'");
            }
        }
        return name;
    }

    /** Checks a tag used in a get filter: non-empty, no spaces or control characters, no "||". */
    public static String checkFilterTag(String tag) {
        if (tag == null || tag.isEmpty()) {
            throw new IllegalArgumentException("a filter tag may not be empty");
        }
        if (tag.contains("||") || tag.equals("*")) {
            throw new IllegalArgumentException("filter tag '" + tag + "' may not be '*' or contain '||'");
        }
        for (int i = 0; i < tag.length(); i++) {
            char c = tag.charAt(i);
            if (c <= 0x20 || c == 0x7f) {
                throw new IllegalArgumentException("filter tag '" + tag + "' may not contain spaces or control characters");
            }
        }
        return tag;
    }

    public static void checkProperty(String name, String value) {
        if (name == null || name.isEmpty()) {
            throw new IllegalArgumentException("a property name may not be empty");
        }
        if (value == null) {
            throw new IllegalArgumentException("property " + name + " has a null value");
        }
        if (name.indexOf('\u0001') >= 0 || name.indexOf('\u0002') >= 0 || value.indexOf('\u0001') >= 0
                || value.indexOf('\u0002') >= 0) {
            throw new IllegalArgumentException("property " + name + " contains U+0001 or U+0002");
        }
    }

    public static long crc32(byte[] b) {
        CRC32 c = new CRC32();
        c.update(b);
        return c.getValue();
    }

    /** The put {@code <checksum>}: CRC32 (IEEE) of the whole put body, masked with 0x7FFFFFFF. */
    public static int putChecksum(byte[] putBody) {
        return (int) (crc32(putBody) & 0x7fffffffL);
    }

    /** The partition of a key: CRC32 of its UTF-8 bytes, masked with 0x7FFFFFFF, modulo the count. */
    public static int partitionForKey(String key, int partitions) {
        if (partitions <= 0) {
            throw new IllegalArgumentException("partition count must be positive");
        }
        return (int) ((crc32(key.getBytes(StandardCharsets.UTF_8)) & 0x7fffffffL) % partitions);
    }

    /** The properties block: {@code key 0x01 value 0x02 ...}; null when there are none. */
    public static byte[] propertiesBlock(Map<String, String> props) {
        if (props == null || props.isEmpty()) {
            return null;
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (Map.Entry<String, String> e : props.entrySet()) {
            checkProperty(e.getKey(), e.getValue());
            out.writeBytes(e.getKey().getBytes(StandardCharsets.UTF_8));
            out.write(1);
            out.writeBytes(e.getValue().getBytes(StandardCharsets.UTF_8));
            out.write(2);
        }
        return out.toByteArray();
    }

    /** Parses a properties block; a repeated key keeps its last value. */
    public static Map<String, String> parseProperties(byte[] b, int off, int len) {
        if (len == 0) {
            return Collections.emptyMap();
        }
        Map<String, String> m = new LinkedHashMap<>();
        int end = off + len;
        int start = off;
        int sep = -1;
        for (int i = off; i < end; i++) {
            if (b[i] == 1 && sep < 0) {
                sep = i;
            } else if (b[i] == 2) {
                if (sep < 0) {
                    throw new ImagoProtocolException("properties entry without a 0x01 separator");
                }
                m.put(new String(b, start, sep - start, StandardCharsets.UTF_8),
                        new String(b, sep + 1, i - sep - 1, StandardCharsets.UTF_8));
                start = i + 1;
                sep = -1;
            }
        }
        if (start != end) {
            throw new ImagoProtocolException("properties block does not end with 0x02");
        }
        return Collections.unmodifiableMap(m);
    }

    /** The flag sent with a put: the user's bits with bit 0 (tag) and bit 1 (properties) set as needed. */
    public static int putFlag(int userFlag, boolean hasTag, boolean hasProps) {
        return (userFlag & ~3) | (hasTag ? 1 : 0) | (hasProps ? 2 : 0);
    }

    /** The put body: [int32 tag length, tag] [int32 properties length, properties] payload. */
    public static byte[] putBody(String tag, byte[] props, byte[] payload) {
        byte[] t = tag == null ? null : tag.getBytes(StandardCharsets.UTF_8);
        int len = payload.length + (t == null ? 0 : 4 + t.length) + (props == null ? 0 : 4 + props.length);
        ByteBuffer bb = ByteBuffer.allocate(len);
        if (t != null) {
            bb.putInt(t.length).put(t);
        }
        if (props != null) {
            bb.putInt(props.length).put(props);
        }
        bb.put(payload);
        return bb.array();
    }

    /** The records of a value body, up to the first bad one. */
    public static final class Records {
        public final List<ReceivedMessage> messages;
        /** Why parsing stopped early, or null when every record was good. */
        public final ImagoProtocolException error;
        /** The offset written in the bad record's header, or -1 when unreadable. */
        public final long errorOffset;

        Records(List<ReceivedMessage> messages, ImagoProtocolException error, long errorOffset) {
            this.messages = messages;
            this.error = error;
            this.errorOffset = errorOffset;
        }
    }

    /** Walks a value body, verifying each record (magic, lengths, CRC) as protocol.md describes. */
    public static Records parseRecords(byte[] b) {
        List<ReceivedMessage> out = new ArrayList<>();
        ByteBuffer bb = ByteBuffer.wrap(b);
        int pos = 0;
        while (pos < b.length) {
            long offsetField = pos + 24 <= b.length ? bb.getLong(pos + 16) : -1;
            try {
                if (pos + RECORD_HEADER > b.length) {
                    throw new ImagoProtocolException("record header at byte " + pos + " runs past the end of the reply");
                }
                long total = Integer.toUnsignedLong(bb.getInt(pos));
                if (total < RECORD_HEADER || pos + total > b.length) {
                    throw new ImagoProtocolException("record at byte " + pos + " has a bad total_len " + total);
                }
                int magic = bb.getInt(pos + 4);
                if (magic != MAGIC) {
                    throw new ImagoProtocolException(String.format("record at byte %d has magic 0x%08x, not 0x%08x",
                            pos, magic, MAGIC));
                }
                int bodyLen = bb.getInt(pos + 52);
                int topicLen = Short.toUnsignedInt(bb.getShort(pos + 56));
                int tagLen = Short.toUnsignedInt(bb.getShort(pos + 58));
                int propsLen = Short.toUnsignedInt(bb.getShort(pos + 60));
                if (bodyLen < 0 || RECORD_HEADER + (long) topicLen + tagLen + propsLen + bodyLen != total) {
                    throw new ImagoProtocolException("record at byte " + pos + ": lengths do not add up to total_len " + total);
                }
                CRC32 crc = new CRC32();
                crc.update(b, pos, 8);
                crc.update(b, pos + 12, (int) total - 12);
                long want = Integer.toUnsignedLong(bb.getInt(pos + 8));
                if (crc.getValue() != want) {
                    throw new ImagoProtocolException(String.format(
                            "record at offset %d fails its CRC (stored 0x%08x, computed 0x%08x)",
                            offsetField, want, crc.getValue()));
                }
                int partition = bb.getInt(pos + 12);
                long offset = bb.getLong(pos + 16);
                long msgId = bb.getLong(pos + 24);
                long storeTs = bb.getLong(pos + 32);
                long bornTs = bb.getLong(pos + 40);
                int flag = bb.getInt(pos + 48);
                int p = pos + RECORD_HEADER;
                String topic = new String(b, p, topicLen, StandardCharsets.UTF_8);
                p += topicLen;
                String tag = tagLen == 0 ? null : new String(b, p, tagLen, StandardCharsets.UTF_8);
                p += tagLen;
                Map<String, String> props = parseProperties(b, p, propsLen);
                p += propsLen;
                byte[] body = new byte[bodyLen];
                System.arraycopy(b, p, body, 0, bodyLen);
                out.add(new ReceivedMessage(topic, partition, offset, msgId, storeTs, bornTs, flag, tag, props, body));
                pos += (int) total;
            } catch (ImagoProtocolException e) {
                return new Records(out, e, offsetField);
            }
        }
        return new Records(out, null, -1);
    }

    /** Parses the STAT lines of a stats reply body into name to value, in order. */
    public static Map<String, String> parseStats(String body) {
        Map<String, String> m = new LinkedHashMap<>();
        for (String line : body.split("\r?\n")) {
            if (line.startsWith("STAT ")) {
                int sp = line.indexOf(' ', 5);
                if (sp < 0) {
                    m.put(line.substring(5), "");
                } else {
                    m.put(line.substring(5, sp), line.substring(sp + 1));
                }
            }
        }
        return m;
    }

    /** Parses {@code <p>:<offset>[ <p>:<offset>]...} into partition to offset, in order. */
    public static Map<Integer, Long> parsePartitionOffsets(String[] tokens, int from) {
        Map<Integer, Long> m = new LinkedHashMap<>();
        for (int i = from; i < tokens.length; i++) {
            String t = tokens[i];
            if (t.isEmpty()) {
                continue;
            }
            int colon = t.indexOf(':');
            if (colon <= 0) {
                throw new ImagoProtocolException("bad partition:offset '" + t + "'");
            }
            try {
                m.put(Integer.parseInt(t.substring(0, colon)), Long.parseUnsignedLong(t.substring(colon + 1)));
            } catch (NumberFormatException e) {
                throw new ImagoProtocolException("bad partition:offset '" + t + "'");
            }
        }
        return m;
    }
}
