package io.imago.client;

/** No reply arrived within the request timeout. The connection is then closed and re-established. Retriable. */
public class ImagoTimeoutException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public ImagoTimeoutException(String message) {
        super(TIMEOUT, message);
    }

    public ImagoTimeoutException(String message, Throwable cause) {
        super(TIMEOUT, message, cause);
    }
}
