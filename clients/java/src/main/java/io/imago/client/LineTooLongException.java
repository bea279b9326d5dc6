package io.imago.client;

/** Broker code 414: a request line longer than the broker's {@code line_bytes_max}. */
public class LineTooLongException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public LineTooLongException(String message) {
        super(414, message);
    }

    public LineTooLongException(String message, Throwable cause) {
        super(414, message, cause);
    }
}
