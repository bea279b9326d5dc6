package io.imago.client;

/** Broker code 409: stale generation, not the owner of a partition, unknown member, or a group mode clash. */
public class ConflictException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public ConflictException(String message) {
        super(409, message);
    }

    public ConflictException(String message, Throwable cause) {
        super(409, message, cause);
    }
}
