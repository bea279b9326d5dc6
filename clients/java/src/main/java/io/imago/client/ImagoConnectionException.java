package io.imago.client;

/** The connection to the broker failed, or no broker could be reached before the deadline. Retriable. */
public class ImagoConnectionException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public ImagoConnectionException(String message) {
        super(CONNECTION, message);
    }

    public ImagoConnectionException(String message, Throwable cause) {
        super(CONNECTION, message, cause);
    }
}
