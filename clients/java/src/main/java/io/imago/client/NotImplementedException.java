package io.imago.client;

/** Broker code 501: transactions and {@code sync} are not implemented by the broker. */
public class NotImplementedException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public NotImplementedException(String message) {
        super(501, message);
    }

    public NotImplementedException(String message, Throwable cause) {
        super(501, message, cause);
    }
}
