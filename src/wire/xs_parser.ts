/**
 * Incremental xenstore frame parser. Bytes go in with `push()` in chunks of
 * any size, split anywhere; `next()` returns one whole frame, or how many
 * more bytes it needs, or a framing error. It never throws on input.
 *
 * A frame whose header announces more than XENSTORE_PAYLOAD_MAX bytes cannot
 * be skipped safely (the length itself may be garbage), so the parser stops
 * there for good: every later `next()` repeats the same error.
 */
import { XENSTORE_PAYLOAD_MAX, XS_HEADER_SIZE, decodeHeader, type XsMessage } from './xs_wire.js';

export type ParseResult =
  | { readonly kind: 'message'; readonly message: XsMessage }
  | { readonly kind: 'need'; readonly bytes: number }
  | { readonly kind: 'error'; readonly reason: string; readonly len: number };

/** Room for two maximal frames before the buffer has to grow. */
const INITIAL_CAPACITY = 2 * (XS_HEADER_SIZE + XENSTORE_PAYLOAD_MAX);

export class XsFrameParser {
  private buf: Uint8Array = new Uint8Array(0);
  private start = 0;
  private end = 0;
  /**
   * True while `buf` is a chunk the caller handed in (no copy made): frames
   * are then returned as views of it. Owned buffers are compacted and reused,
   * so frames taken from them are copied out.
   */
  private borrowed = false;
  private failure: { kind: 'error'; reason: string; len: number } | null = null;

  constructor(private readonly maxPayload = XENSTORE_PAYLOAD_MAX) {}

  /** Bytes received but not yet returned as frames. */
  get buffered(): number {
    return this.end - this.start;
  }

  /**
   * Adds bytes. The chunk must not be modified afterwards by the caller
   * (socket and device reads hand over fresh buffers, so this costs no copy).
   */
  push(chunk: Uint8Array): void {
    if (chunk.length === 0) return;
    if (this.start === this.end) {
      // Nothing left over: parse straight out of the caller's chunk.
      this.buf = chunk;
      this.start = 0;
      this.end = chunk.length;
      this.borrowed = true;
      return;
    }
    const pending = this.end - this.start;
    if (this.borrowed || pending + chunk.length > this.buf.length) {
      // Keep the tail of a borrowed chunk (or outgrow ours) in a fresh owned buffer.
      const next = new Uint8Array(Math.max(INITIAL_CAPACITY, pending + chunk.length));
      next.set(this.buf.subarray(this.start, this.end), 0);
      this.buf = next;
      this.borrowed = false;
      this.start = 0;
      this.end = pending;
    } else if (this.end + chunk.length > this.buf.length) {
      // Room exists, but not after the tail: slide the tail to the front.
      this.buf.copyWithin(0, this.start, this.end);
      this.start = 0;
      this.end = pending;
    }
    this.buf.set(chunk, this.end);
    this.end += chunk.length;
  }

  /** The next whole frame, or what is missing. */
  next(): ParseResult {
    if (this.failure) return this.failure;
    const avail = this.end - this.start;
    if (avail < XS_HEADER_SIZE) return { kind: 'need', bytes: XS_HEADER_SIZE - avail };
    const h = decodeHeader(this.buf, this.start);
    if (h.len > this.maxPayload) {
      this.failure = {
        kind: 'error',
        reason: `frame announces ${h.len} payload bytes, more than XENSTORE_PAYLOAD_MAX (${this.maxPayload})`,
        len: h.len,
      };
      return this.failure;
    }
    const total = XS_HEADER_SIZE + h.len;
    if (avail < total) return { kind: 'need', bytes: total - avail };
    const from = this.start + XS_HEADER_SIZE;
    const payload = this.borrowed ? this.buf.subarray(from, from + h.len) : this.buf.slice(from, from + h.len);
    this.start += total;
    if (this.start === this.end) {
      // Drained: drop a borrowed chunk so it can be collected.
      this.start = this.end = 0;
      if (this.borrowed) {
        this.buf = new Uint8Array(0);
        this.borrowed = false;
      }
    }
    return { kind: 'message', message: { ...h, payload } };
  }
}
