/**
 * The byte channel a xenstore client runs over. The client is written against
 * this alone, so the same code runs over dom0's Unix socket, a guest's
 * /dev/xen/xenbus, the shared xenstore ring page, or an in-memory pipe.
 */

/** What a byte stream tells its user. */
export interface ByteStreamHandlers {
  /** Bytes arrived. The chunk is handed over: the stream does not reuse it. */
  data(chunk: Uint8Array): void;
  /** A write that took fewer bytes than offered can now be retried. */
  writable(): void;
  /** The stream ended (cleanly if `error` is undefined). Called once. */
  closed(error?: Error): void;
}

export interface ByteStream {
  /** Starts delivery to `handlers`. Called once, before any write. */
  start(handlers: ByteStreamHandlers): void;
  /**
   * Offers bytes; returns how many were taken (0..data.length). Fewer than
   * offered means "full for now": offer the rest after `writable()`. The
   * bytes taken are handed over: the stream may keep a reference instead of
   * copying, so the caller must not modify them afterwards.
   */
  write(data: Uint8Array): number;
  /**
   * The largest payload one frame may carry on this transport, when it is
   * below the protocol's XENSTORE_PAYLOAD_MAX; the client refuses longer
   * requests with XS_E2BIG instead of sending them.
   */
  readonly maxPayload?: number;
  /** Closes the stream; `closed()` follows. */
  close(): void;
}
