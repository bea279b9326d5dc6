package io.imago.client;

/** Broker code 403: a put to a topic that does not exist while auto-create is off, or a limit such as {@code topics_max}, {@code groups_max} or {@code members_per_group_max} reached. */
public class ForbiddenException extends ImagoException {
    private static final long serialVersionUID = 1L;

    public ForbiddenException(String message) {
        super(403, message);
    }

    public ForbiddenException(String message, Throwable cause) {
        super(403, message, cause);
    }
}
