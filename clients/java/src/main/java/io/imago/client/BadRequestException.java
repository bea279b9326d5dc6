package io.imago.client;

/** Broker code 400: a malformed request, a partition out of range, a checksum mismatch or a bad put body. */
public class BadRequestException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public BadRequestException(String message) {
        super(400, message);
    }

    public BadRequestException(String message, Throwable cause) {
        super(400, message, cause);
    }
}
