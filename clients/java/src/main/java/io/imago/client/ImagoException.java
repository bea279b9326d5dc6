package io.imago.client;

/**
 * An error from the broker (a {@code result} reply with an error code) or from the client side
 * (connection, timeout, malformed data). Unchecked, like Kafka's {@code KafkaException}.
 *
 * <p>{@link #getCode()} is the broker's reply code (400, 404, 409, ...) and {@link #getMessage()}
 * the reply's text as the broker sent it. Client-side failures use negative codes:
 * {@link #CONNECTION} ({@link ImagoConnectionException}), {@link #TIMEOUT}
 * ({@link ImagoTimeoutException}) and {@link #PROTOCOL} ({@link ImagoProtocolException}).
 * Each broker code the protocol defines has its own subclass; {@link #fromReply(int, String)}
 * picks it.
 */
public class ImagoException extends RuntimeException {
    private static final long serialVersionUID = 1L;

    /** The connection failed or could not be established. */
    public static final int CONNECTION = -1;
    /** No reply arrived within the request timeout. */
    public static final int TIMEOUT = -2;
    /** The broker sent something this client cannot read (bad reply line, record failing its CRC). */
    public static final int PROTOCOL = -3;

    private final int code;

    public ImagoException(int code, String message) {
        super(message);
        this.code = code;
    }

    public ImagoException(int code, String message, Throwable cause) {
        super(message, cause);
        this.code = code;
    }

    /** The broker's reply code, or a negative client-side code. */
    public int getCode() {
        return code;
    }

    /**
     * Whether repeating the same request may succeed: connection failures, timeouts, 500 and 503.
     * A retried put may be stored twice (at-least-once).
     */
    public boolean isRetriable() {
        return code == CONNECTION || code == TIMEOUT || code == 500 || code == 503;
    }

    @Override
    public String toString() {
        return getClass().getName() + ": " + code + " " + getMessage();
    }

    /** The exception for a broker reply with {@code code} and text {@code message}. */
    public static ImagoException fromReply(int code, String message) {
        switch (code) {
            case 400: return new BadRequestException(message);
            case 403: return new ForbiddenException(message);
            case 404: return new NotFoundException(message);
            case 408: return new RequestTimeoutException(message);
            case 409: return new ConflictException(message);
            case 413: return new PayloadTooLargeException(message);
            case 414: return new LineTooLongException(message);
            case 500: return new BrokerInternalException(message);
            case 501: return new NotImplementedException(message);
            case 503: return new UnavailableException(message);
            case 507: return new InsufficientStorageException(message);
            case 520: return new CorruptRecordException(message);
            default: return new ImagoException(code, message);
        }
    }
}
