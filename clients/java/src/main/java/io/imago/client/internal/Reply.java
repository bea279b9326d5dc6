package io.imago.client.internal;

import io.imago.client.ImagoException;
import java.nio.charset.StandardCharsets;

/** One reply from the broker: {@code result <code> <len> <opaque>} or {@code value <len> <opaque>}. */
public final class Reply {
    /** The code of a {@code value} reply (records). */
    public static final int VALUE = 0;

    private final int code;
    private final int opaque;
    private final byte[] body;

    public Reply(int code, int opaque, byte[] body) {
        this.code = code;
        this.opaque = opaque;
        this.body = body;
    }

    /** The result code, or {@link #VALUE} for a value reply. */
    public int code() {
        return code;
    }

    public boolean isValue() {
        return code == VALUE;
    }

    public boolean isOk() {
        return code == 200;
    }

    public int opaque() {
        return opaque;
    }

    public byte[] body() {
        return body;
    }

    public String text() {
        return new String(body, StandardCharsets.UTF_8);
    }

    /** The typed exception for an error reply. */
    public ImagoException toException() {
        return ImagoException.fromReply(code, text());
    }

    /** Returns this reply if it is a {@code result 200}, throws the matching exception otherwise. */
    public Reply expectOk() {
        if (code == 200) {
            return this;
        }
        if (code == VALUE) {
            throw new io.imago.client.ImagoProtocolException("unexpected value reply");
        }
        throw toException();
    }

    @Override
    public String toString() {
        return code == VALUE ? "value " + body.length + " " + opaque
                : "result " + code + " " + body.length + " " + opaque + " " + text();
    }
}
