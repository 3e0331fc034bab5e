/**
 * An in-memory duplex pair of {@link ByteStream}s: what one end writes, the
 * other receives, always asynchronously (as a socket would), never re-entering
 * the writer. Options make it behave like a difficult channel so the code on
 * both ends can be tested against it: deliveries split into small pieces, and
 * writes that take only part of what is offered.
 */
import type { ByteStream, ByteStreamHandlers } from './byte_stream.js';

export interface MemoryPipeOptions {
  /**
   * Split each delivery into pieces of at most this many bytes (random sizes
   * from 1 up, from `seed`), so the reader sees frames cut anywhere.
   */
  maxChunk?: number;
  /** Bytes one write may take before the end is "full" until the reader drains. */
  writeCapacity?: number;
  /** Seed for the piece sizes. */
  seed?: number;
}

class MemoryEnd implements ByteStream {
  peer!: MemoryEnd;
  handlers: ByteStreamHandlers | null = null;
  private readonly inbox: Uint8Array[] = [];
  private scheduled = false;
  private ended = false;
  /** Bytes written by this end that the peer has not yet been handed. */
  private inTransit = 0;
  private wantWritable = false;
  private closedNotified = false;
  private rng: number;

  constructor(private readonly opts: MemoryPipeOptions) {
    this.rng = opts.seed ?? 1;
  }

  start(handlers: ByteStreamHandlers): void {
    this.handlers = handlers;
    this.schedule();
  }

  write(data: Uint8Array): number {
    if (this.ended || this.peer.ended) return 0;
    const cap = this.opts.writeCapacity;
    let n = data.length;
    if (cap !== undefined) {
      n = Math.min(n, Math.max(0, cap - this.inTransit));
      if (n < data.length) this.wantWritable = true;
      if (n === 0) return 0;
    }
    this.inTransit += n;
    this.peer.deliver(n === data.length ? data : data.subarray(0, n));
    return n;
  }

  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.schedule();
    this.peer.schedule();
  }

  private deliver(chunk: Uint8Array): void {
    const max = this.opts.maxChunk;
    if (max === undefined) {
      this.inbox.push(chunk);
    } else {
      for (let off = 0; off < chunk.length;) {
        this.rng = (this.rng * 1103515245 + 12345) >>> 0;
        const n = Math.min(chunk.length - off, 1 + (this.rng % max));
        this.inbox.push(chunk.subarray(off, off + n));
        off += n;
      }
    }
    this.schedule();
  }

  schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.run());
  }

  private run(): void {
    this.scheduled = false;
    if (!this.handlers) return;
    while (this.inbox.length > 0 && !this.closedNotified) {
      const chunk = this.inbox.shift()!;
      this.peer.drained(chunk.length);
      this.handlers.data(chunk);
    }
    if ((this.ended || this.peer.ended) && !this.closedNotified) {
      this.closedNotified = true;
      this.handlers.closed();
    }
  }

  /** The peer took `n` of our bytes: room to write again. */
  private drained(n: number): void {
    this.inTransit -= n;
    if (this.wantWritable && !this.ended) {
      this.wantWritable = false;
      const h = this.handlers;
      if (h) setImmediate(() => h.writable());
    }
  }
}

/** Two connected ends: `[a, b]`. */
export function createMemoryPipe(opts: MemoryPipeOptions = {}, peerOpts: MemoryPipeOptions = opts): [ByteStream, ByteStream] {
  const a = new MemoryEnd(opts);
  const b = new MemoryEnd(peerOpts);
  a.peer = b;
  b.peer = a;
  return [a, b];
}
