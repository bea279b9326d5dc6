package io.imago.client;

/** Broker code 413: the put body is longer than the broker's {@code body_bytes_max}. */
public class PayloadTooLargeException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public PayloadTooLargeException(String message) {
        super(413, message);
    }

    public PayloadTooLargeException(String message, Throwable cause) {
        super(413, message, cause);
    }
}
