package io.imago.client;

/** Broker code 500: an I/O error inside the broker. Retriable. */
public class BrokerInternalException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public BrokerInternalException(String message) {
        super(500, message);
    }

    public BrokerInternalException(String message, Throwable cause) {
        super(500, message, cause);
    }
}
