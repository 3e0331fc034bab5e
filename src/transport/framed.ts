/**
 * A {@link MessageStream} over a {@link ByteStream}: frames cut out of the
 * bytes as they come (in whatever pieces the transport delivers them), and
 * messages encoded and joined so that those sent in the same tick go out in
 * one write. A short write is resumed when the byte stream says it may be;
 * meanwhile, and while a few batches are already waiting, new messages are
 * refused: the sender keeps them (and may still drop them), which is its
 * backpressure.
 */
import { XenstoreError } from '../errors.js';
import { concatBytes } from '../wire/bytes.js';
import { XsFrameParser } from '../wire/xs_parser.js';
import { encodeMessage } from '../wire/xs_wire.js';
import type { ByteStream } from './byte_stream.js';
import type { MessageStream, MessageStreamHandlers, OutgoingMessage } from './message_stream.js';

/** Frames gathered into one write, at most. */
const WRITE_BATCH_BYTES = 64 * 1024;
/** Encoded bytes held for the next writes before sends are refused (the sender keeps the rest). */
const QUEUE_HIGH_WATER = 4 * WRITE_BATCH_BYTES;

export class FramedStream implements MessageStream {
  readonly kind = 'messages';
  readonly maxPayload: number | undefined;
  private handlers: MessageStreamHandlers | null = null;
  private readonly parser = new XsFrameParser();
  /** Encoded frames not yet given to the byte stream. */
  private readonly out: Uint8Array[] = [];
  private queued = 0;
  /** A write the byte stream took only part of, and how much of it. */
  private partial: Uint8Array | null = null;
  private partialOff = 0;
  private refused = false;
  private scheduled = false;
  private done = false;

  constructor(private readonly stream: ByteStream) {
    this.maxPayload = stream.maxPayload;
  }

  start(handlers: MessageStreamHandlers): void {
    this.handlers = handlers;
    this.stream.start({
      data: (chunk) => this.received(chunk),
      writable: () => this.flush(),
      closed: (err) => this.finish(err),
    });
  }

  send(m: OutgoingMessage): boolean {
    if (this.done) return true; // dropped: closed() has been or is being reported
    if (this.partial !== null || this.queued >= QUEUE_HIGH_WATER) {
      this.refused = true;
      return false;
    }
    const frame = encodeMessage(m.type, m.reqId, m.txId, m.payload);
    this.out.push(frame);
    this.queued += frame.length;
    if (!this.scheduled) {
      this.scheduled = true;
      // Everything sent in the same tick shares one write.
      queueMicrotask(() => {
        this.scheduled = false;
        this.flush();
      });
    }
    return true;
  }

  close(): void {
    this.stream.close();
  }

  private flush(): void {
    while (!this.done) {
      if (this.partial === null && !this.takeBatch()) break;
      const buf = this.partial!;
      this.partialOff += this.stream.write(this.partialOff === 0 ? buf : buf.subarray(this.partialOff));
      if (this.partialOff < buf.length) return; // resumed on writable()
      this.partial = null;
      this.partialOff = 0;
    }
    if (this.refused && !this.done) {
      this.refused = false;
      this.handlers?.writable();
    }
  }

  /** Joins queued frames, up to a batch, into the next write. */
  private takeBatch(): boolean {
    if (this.out.length === 0) return false;
    let n = 0;
    let size = 0;
    while (n < this.out.length && size < WRITE_BATCH_BYTES) size += this.out[n++]!.length;
    const frames = this.out.splice(0, n);
    this.queued -= size;
    this.partial = frames.length === 1 ? frames[0]! : concatBytes(frames);
    this.partialOff = 0;
    return true;
  }

  private received(chunk: Uint8Array): void {
    this.parser.push(chunk);
    while (!this.done) {
      const r = this.parser.next();
      if (r.kind === 'need') return;
      if (r.kind === 'error') {
        this.finish(new XenstoreError('XS_EPROTO', `xenstore stream is broken: ${r.reason}`));
        this.stream.close();
        return;
      }
      this.handlers?.message(r.message);
    }
  }

  private finish(err?: Error): void {
    if (this.done) return;
    this.done = true;
    this.out.length = 0;
    this.queued = 0;
    this.partial = null;
    this.handlers?.closed(err);
  }
}
