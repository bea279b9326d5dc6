package io.imago.client;

/** Broker code 408: the broker gave up on a half-sent request and closed the connection. */
public class RequestTimeoutException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public RequestTimeoutException(String message) {
        super(408, message);
    }

    public RequestTimeoutException(String message, Throwable cause) {
        super(408, message, cause);
    }
}
