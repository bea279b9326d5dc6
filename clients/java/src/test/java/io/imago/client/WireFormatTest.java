package io.imago.client;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import io.imago.client.internal.Wire;
import java.nio.charset.StandardCharsets;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

/** The client's encodings against the examples of protocol.md; no broker needed. */
class WireFormatTest {
    static byte[] hex(String s) {
        String h = s.replaceAll("\\s+", "");
        byte[] b = new byte[h.length() / 2];
        for (int i = 0; i < b.length; i++) {
            b[i] = (byte) Integer.parseInt(h.substring(2 * i, 2 * i + 2), 16);
        }
        return b;
    }

    // The two records of protocol.md's get example.
    static final byte[] RECORD_0 = hex(
            "00 00 00 4e 49 4d 47 01 c5 b6 52 aa 00 00 00 00"
            + "00 00 00 00 00 00 00 00 00 01 00 00 00 00 00 00"
            + "00 00 01 8b cf e5 68 00 00 00 01 8b cf e5 68 00"
            + "00 00 00 00 00 00 00 05 00 09 00 00 00 00 00 00"
            + "6d 65 74 61 2d 74 65 73 74 68 65 6c 6c 6f");
    static final byte[] RECORD_1 = hex(
            "00 00 00 52 49 4d 47 01 6a c8 b0 24 00 00 00 00"
            + "00 00 00 00 00 00 00 01 00 01 00 00 00 00 00 4e"
            + "00 00 01 8b cf e5 68 fa 00 00 01 8b cf e5 68 fa"
            + "00 00 00 01 00 00 00 05 00 09 00 04 00 00 00 00"
            + "6d 65 74 61 2d 74 65 73 74 74 61 67 31 68 65 6c"
            + "6c 6f");

    @Test
    void putChecksumMatchesTheProtocolExamples() {
        assertEquals(907060870, Wire.putChecksum("hello".getBytes(StandardCharsets.UTF_8)));
        byte[] withTag = Wire.putBody("tag1", null, "hello".getBytes(StandardCharsets.UTF_8));
        assertArrayEquals(hex("00 00 00 04 74 61 67 31 68 65 6c 6c 6f"), withTag);
        assertEquals(1184113660, Wire.putChecksum(withTag));
        assertEquals(1, Wire.putFlag(0, true, false));
        assertEquals(2, Wire.putFlag(0, false, true));
        assertEquals(0x103, Wire.putFlag(0x100, true, true));
        assertEquals(0x100, Wire.putFlag(0x103, false, false));
    }

    @Test
    void propertiesBlockMatchesTheProtocolExampleAndRoundTrips() {
        Map<String, String> props = new LinkedHashMap<>();
        props.put("k", "v");
        props.put("trace", "");
        byte[] block = Wire.propertiesBlock(props);
        assertArrayEquals(hex("6b 01 76 02 74 72 61 63 65 01 02"), block);
        assertEquals(props, Wire.parseProperties(block, 0, block.length));
        assertNull(Wire.propertiesBlock(Map.of()));
        byte[] body = Wire.putBody(null, block, new byte[] {9});
        assertArrayEquals(hex("00 00 00 0b 6b 01 76 02 74 72 61 63 65 01 02 09"), body);
    }

    @Test
    void recordsOfTheProtocolExampleParseAndVerify() {
        byte[] body = new byte[RECORD_0.length + RECORD_1.length];
        System.arraycopy(RECORD_0, 0, body, 0, RECORD_0.length);
        System.arraycopy(RECORD_1, 0, body, RECORD_0.length, RECORD_1.length);
        Wire.Records recs = Wire.parseRecords(body);
        assertNull(recs.error);
        List<ReceivedMessage> ms = recs.messages;
        assertEquals(2, ms.size());
        ReceivedMessage a = ms.get(0);
        assertEquals("meta-test", a.getTopic());
        assertEquals(0, a.getPartition());
        assertEquals(0, a.getOffset());
        assertEquals("281474976710656", a.getMsgIdString());
        assertEquals(1700000000000L, a.getStoreTimestamp());
        assertEquals(1700000000000L, a.getBornTimestamp());
        assertEquals(0, a.getFlag());
        assertNull(a.getTag());
        assertTrue(a.getProperties().isEmpty());
        assertNull(a.getKey());
        assertEquals("hello", a.getBodyAsString());
        ReceivedMessage b = ms.get(1);
        assertEquals(1, b.getOffset());
        assertEquals("281474976710734", b.getMsgIdString());
        assertEquals("tag1", b.getTag());
        assertEquals(1, b.getFlag());
        assertEquals("hello", b.getBodyAsString());
    }

    @Test
    void aRecordFailingItsCrcIsReportedWithTheRecordsBeforeIt() {
        byte[] body = new byte[RECORD_0.length + RECORD_1.length];
        System.arraycopy(RECORD_0, 0, body, 0, RECORD_0.length);
        System.arraycopy(RECORD_1, 0, body, RECORD_0.length, RECORD_1.length);
        body[body.length - 1] ^= 0x01; // last payload byte of the second record
        Wire.Records recs = Wire.parseRecords(body);
        assertEquals(1, recs.messages.size());
        assertNotNull(recs.error);
        assertInstanceOf(ImagoProtocolException.class, recs.error);
        assertTrue(recs.error.getMessage().contains("CRC"), recs.error.getMessage());
        assertEquals(1, recs.errorOffset);

        byte[] badMagic = RECORD_0.clone();
        badMagic[7] = 2;
        assertTrue(Wire.parseRecords(badMagic).error.getMessage().contains("magic"));
        byte[] truncated = java.util.Arrays.copyOf(RECORD_0, 70);
        assertNotNull(Wire.parseRecords(truncated).error);
    }

    @Test
    void brokerCodesMapToTypedExceptions() {
        assertInstanceOf(BadRequestException.class, ImagoException.fromReply(400, "x"));
        assertInstanceOf(ForbiddenException.class, ImagoException.fromReply(403, "x"));
        assertInstanceOf(NotFoundException.class, ImagoException.fromReply(404, "x"));
        assertInstanceOf(RequestTimeoutException.class, ImagoException.fromReply(408, "x"));
        assertInstanceOf(ConflictException.class, ImagoException.fromReply(409, "x"));
        assertInstanceOf(PayloadTooLargeException.class, ImagoException.fromReply(413, "x"));
        assertInstanceOf(LineTooLongException.class, ImagoException.fromReply(414, "x"));
        assertInstanceOf(BrokerInternalException.class, ImagoException.fromReply(500, "x"));
        assertInstanceOf(NotImplementedException.class, ImagoException.fromReply(501, "x"));
        assertInstanceOf(UnavailableException.class, ImagoException.fromReply(503, "x"));
        ImagoException full = ImagoException.fromReply(507, "disk free 1 bytes under reserve");
        assertInstanceOf(InsufficientStorageException.class, full);
        assertEquals(507, full.getCode());
        assertEquals("disk free 1 bytes under reserve", full.getMessage());
        assertFalse(full.isRetriable());
        assertInstanceOf(CorruptRecordException.class, ImagoException.fromReply(520, "x"));
        assertEquals(ImagoException.class, ImagoException.fromReply(418, "x").getClass());
        assertTrue(ImagoException.fromReply(503, "x").isRetriable());
        assertTrue(new ImagoConnectionException("x").isRetriable());
        assertTrue(new ImagoTimeoutException("x").isRetriable());
    }

    @Test
    void keyHashIsStableAndNamesAreChecked() {
        int p = Wire.partitionForKey("order-42", 4);
        for (int i = 0; i < 10; i++) {
            assertEquals(p, Wire.partitionForKey("order-42", 4));
        }
        // (CRC32("order-42") & 0x7fffffff) % 4, computed independently of the client.
        java.util.zip.CRC32 c = new java.util.zip.CRC32();
        c.update("order-42".getBytes(StandardCharsets.UTF_8));
        assertEquals((int) ((c.getValue() & 0x7fffffffL) % 4), p);
        assertThrows(IllegalArgumentException.class, () -> Message.builder("bad topic"));
        assertThrows(IllegalArgumentException.class, () -> Message.builder("-x"));
        assertThrows(IllegalArgumentException.class, () -> Message.builder("t").property("a\u0001", "b"));
        assertThrows(IllegalArgumentException.class,
                () -> ConsumerConfig.builder("127.0.0.1:1", "g", "t").tags("a b"));
        assertThrows(IllegalArgumentException.class, () -> ProducerConfig.builder("nohostport").build());
        String id = ConsumerConfig.defaultMemberId();
        assertEquals(id, Wire.checkName("member", id));
    }
}
