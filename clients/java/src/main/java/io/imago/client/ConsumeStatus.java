package io.imago.client;

/** What a {@link MessageListener} reports for a batch. */
public enum ConsumeStatus {
    /** The batch was processed; its offsets may be committed. */
    CONSUME_SUCCESS,
    /** Processing failed: the batch (and what followed it in the same poll) is delivered again after {@code reconsumeDelay}. */
    RECONSUME_LATER
}
