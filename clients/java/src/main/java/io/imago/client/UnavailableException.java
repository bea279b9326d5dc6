package io.imago.client;

/** Broker code 503: too many connections, or the broker is shutting down. Retriable. */
public class UnavailableException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public UnavailableException(String message) {
        super(503, message);
    }

    public UnavailableException(String message, Throwable cause) {
        super(503, message, cause);
    }
}
