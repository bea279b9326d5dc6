package io.imago.client;

/** Broker code 404: an unknown topic, no committed offset, or (for a get) no message at the offset. */
public class NotFoundException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public NotFoundException(String message) {
        super(404, message);
    }

    public NotFoundException(String message, Throwable cause) {
        super(404, message, cause);
    }
}
