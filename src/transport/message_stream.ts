/**
 * The message channel a xenstore client runs over: whole messages in, whole
 * messages out. A transport that only moves bytes (a socket, the ring page,
 * an in-memory pipe) is a {@link ByteStream}, and {@link FramedStream} cuts
 * and joins its frames; a transport that must look at each message anyway
 * (the xenbus device routes each by type and transaction) is a
 * MessageStream itself, so nothing is parsed or encoded twice.
 */
import type { XsMessage } from '../wire/xs_wire.js';
import type { ByteStream } from './byte_stream.js';

/** A message to send: the header's fields and the payload (the length is the payload's). */
export interface OutgoingMessage {
  readonly type: number;
  readonly reqId: number;
  readonly txId: number;
  readonly payload: Uint8Array;
}

/** What a message stream tells its user. */
export interface MessageStreamHandlers {
  /** A whole message arrived. */
  message(m: XsMessage): void;
  /** A send that was refused can now be offered again. */
  writable(): void;
  /** The stream ended (cleanly if `error` is undefined). Called once. */
  closed(error?: Error): void;
}

export interface MessageStream {
  /** Tells a message stream from a {@link ByteStream}. */
  readonly kind: 'messages';
  /** Starts delivery to `handlers`. Called once, before any send. */
  start(handlers: MessageStreamHandlers): void;
  /**
   * Offers one message, in order after the ones before it; false when the
   * stream is full for now and did not take it: offer it again after
   * `writable()`. The payload is handed over (not copied, not to be changed).
   */
  send(m: OutgoingMessage): boolean;
  /**
   * The largest payload one message may carry on this transport, when it is
   * below the protocol's XENSTORE_PAYLOAD_MAX; the client refuses longer
   * requests with XS_E2BIG instead of sending them.
   */
  readonly maxPayload?: number;
  /** req_ids the transport uses for messages of its own: a client never picks them. */
  readonly reservedReqIds?: ReadonlySet<number>;
  /** Closes the stream; `closed()` follows. */
  close(): void;
}

export function isMessageStream(s: ByteStream | MessageStream): s is MessageStream {
  return (s as Partial<MessageStream>).kind === 'messages';
}
