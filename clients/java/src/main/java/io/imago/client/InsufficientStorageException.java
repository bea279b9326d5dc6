package io.imago.client;

/** Broker code 507: the broker's disk is under its free-space reserve; nothing was written. */
public class InsufficientStorageException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public InsufficientStorageException(String message) {
        super(507, message);
    }

    public InsufficientStorageException(String message, Throwable cause) {
        super(507, message, cause);
    }
}
