package io.imago.client;

/** Broker code 520: the record at the requested offset failed its CRC on the broker. */
public class CorruptRecordException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public CorruptRecordException(String message) {
        super(520, message);
    }

    public CorruptRecordException(String message, Throwable cause) {
        super(520, message, cause);
    }
}
