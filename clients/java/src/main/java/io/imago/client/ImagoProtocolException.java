package io.imago.client;

/** The broker sent a reply or a record this client cannot read (unknown reply line, bad magic, CRC mismatch). */
public class ImagoProtocolException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public ImagoProtocolException(String message) {
        super(PROTOCOL, message);
    }

    public ImagoProtocolException(String message, Throwable cause) {
        super(PROTOCOL, message, cause);
    }
}
