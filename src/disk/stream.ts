/**
 * Node streams over a {@link BlockTarget}: several requests in flight on
 * device buffers (the backend reads and writes them in place), backpressure
 * from the stream's consumer or producer, and byte ranges that need not be
 * whole sectors (the edges are read whole and trimmed on reading, read,
 * merged and written whole on writing).
 */
import { Readable, Writable } from 'node:stream';
import { BlkifError, isXenError } from '../errors.js';
import type { BlockTarget } from '../blkfront/target.js';
import { freeBufferQuietly, mergeSector } from './range.js';

export interface BlockReadStreamOptions {
  /** First byte (default 0). */
  start?: number;
  /** Last byte, inclusive as in `fs.createReadStream` (default: the last byte of the disk). */
  end?: number;
  /** Bytes per request (default 1 MiB; rounded up to whole sectors). */
  chunkSize?: number;
  /** Requests kept in flight (default 4). */
  depth?: number;
}

export interface BlockWriteStreamOptions {
  /** Byte where writing starts (default 0). */
  start?: number;
  /** Bytes per request (default 1 MiB; rounded up to whole sectors). */
  chunkSize?: number;
  /** Requests kept in flight (default 4). */
  depth?: number;
  /** Flush the disk's cache once everything is written, before 'finish' (default true). */
  flush?: boolean;
}

const DEFAULT_CHUNK = 1 << 20;
const DEFAULT_DEPTH = 4;

function chunkOf(target: BlockTarget, chunkSize: number | undefined): number {
  const c = chunkSize ?? DEFAULT_CHUNK;
  if (!Number.isSafeInteger(c) || c <= 0) throw new BlkifError('BLKIF_EINVAL', `chunkSize must be a positive integer, not ${c}`);
  return Math.ceil(c / target.sectorSize) * target.sectorSize;
}

function depthOf(depth: number | undefined): number {
  const d = depth ?? DEFAULT_DEPTH;
  if (!Number.isSafeInteger(d) || d < 1 || d > 256) throw new BlkifError('BLKIF_EINVAL', `depth must be 1–256, not ${d}`);
  return d;
}

/** What a read of `start`..`end` (inclusive) asks of the disk: whole sectors from `first` to `alignedStop`, trimmed to `start`..`stop`. */
interface ReadPlan {
  chunk: number;
  depth: number;
  start: number;
  /** One past the last byte wanted. */
  stop: number;
  /** The first aligned byte to request. */
  first: number;
  alignedStop: number;
}

/** Checks a read's options (BLKIF_ERANGE outside the disk, named as `what`) and lays it out in sectors. */
function planRead(target: BlockTarget, opts: BlockReadStreamOptions, what: string): ReadPlan {
  const ss = target.sectorSize;
  const chunk = chunkOf(target, opts.chunkSize);
  const depth = depthOf(opts.depth);
  const start = opts.start ?? 0;
  const end = opts.end ?? target.size - 1;
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || start < 0 || end >= target.size || end < start - 1) {
    throw new BlkifError('BLKIF_ERANGE', `${what} ${start}..${end} is not inside the disk (${target.size} bytes)`);
  }
  const stop = end + 1;
  return { chunk, depth, start, stop, first: Math.floor(start / ss) * ss, alignedStop: Math.ceil(stop / ss) * ss };
}

/**
 * Device buffers where the target has them, else ordinary memory (bounced
 * by the driver). Only a shortage falls back: a closed or broken device
 * fails the stream with its own error.
 */
function allocSlot(target: BlockTarget, length: number): { buf: Uint8Array; device: boolean } {
  try {
    return { buf: target.allocBuffer(length), device: true };
  } catch (err) {
    if (isXenError(err, 'XEN_ENOSPC') || !isXenError(err)) return { buf: new Uint8Array(length), device: false };
    throw err;
  }
}

/**
 * Gives a stream's device buffers back once the I/O on them has settled: a
 * buffer is the backend's until then. A closed device has ended their
 * grants already, so a refusal to free is nothing to report.
 */
async function freeWhenSettled(
  target: BlockTarget,
  pending: ReadonlyArray<Promise<unknown> | null>,
  slots: ReadonlyArray<{ buf: Uint8Array; device: boolean }>,
): Promise<void> {
  await Promise.allSettled(pending.filter((p) => p !== null));
  for (const s of slots) if (s.device) freeBufferQuietly(target, s.buf);
}

interface ReadSlot {
  buf: Uint8Array;
  device: boolean;
  offset: number;
  length: number;
  done: boolean;
  error: unknown;
  /** The read under way, settled once its outcome is recorded. */
  read: Promise<void> | null;
}

/**
 * A Readable of the bytes `start`..`end` (inclusive) of `target`. Up to
 * `depth` reads of `chunkSize` are in flight; chunks are pushed in order,
 * each a copy the consumer owns; a failed read destroys the stream with its
 * error (typed, as the target raised it).
 */
export function createReadStream(target: BlockTarget, opts: BlockReadStreamOptions = {}): Readable {
  const { chunk, depth, start, stop, first, alignedStop } = planRead(target, opts, 'read stream');
  let next = first; // next aligned byte to request
  const free: ReadSlot[] = [];
  const all: ReadSlot[] = [];
  const inflight: ReadSlot[] = [];
  let wanted = false;
  let finished = false;

  const stream = new Readable({
    // Finished reads wait in `inflight`, not in the stream's buffer: a reader that calls read()
    // (for await does) gets everything buffered concatenated, one more copy per chunk.
    highWaterMark: 0,
    read() {
      wanted = true;
      deliver();
      pump();
    },
    destroy(err, cb) {
      finished = true;
      // A device buffer is the backend's until its read settles: wait, then give them back.
      void freeWhenSettled(
        target,
        inflight.map((s) => s.read),
        all,
      ).then(() => cb(err));
    },
  });
  // Reads are issued whether or not the consumer wants more: `depth` of them stay in flight, and
  // a finished one waits in order until the consumer asks. That bounds what is held (depth chunks,
  // plus the stream's own buffer) and keeps the ring busy while the consumer catches up.
  function pump(): void {
    while (!finished && inflight.length < depth && next < alignedStop) {
      let s = free.pop();
      if (s === undefined) {
        const { buf, device } = allocSlot(target, chunk);
        s = { buf, device, offset: 0, length: 0, done: false, error: null, read: null };
        all.push(s);
      }
      const slot = s;
      slot.offset = next;
      slot.length = Math.min(chunk, alignedStop - next);
      slot.done = false;
      slot.error = null;
      next += slot.length;
      inflight.push(slot);
      slot.read = target.readInto(slot.offset, slot.buf.subarray(0, slot.length)).then(
        () => settle(slot, null),
        (err: unknown) => settle(slot, err ?? new BlkifError('BLKIF_EIO', 'read failed')),
      );
    }
  }

  /** Pushes finished reads, oldest first, while the consumer wants them; ends the stream after the last. */
  function deliver(): void {
    while (wanted && !finished && inflight.length > 0 && inflight[0]!.done) {
      const s = inflight.shift()!;
      if (s.error !== null) {
        stream.destroy(
          s.error instanceof Error ? s.error : new BlkifError('BLKIF_EIO', typeof s.error === 'string' ? s.error : 'read failed'),
        );
        return;
      }
      const from = Math.max(start, s.offset) - s.offset;
      const to = Math.min(stop, s.offset + s.length) - s.offset;
      // The consumer owns what it is given; the slot goes back to the ring.
      const out = Buffer.allocUnsafe(to - from);
      out.set(s.buf.subarray(from, to));
      free.push(s);
      if (!stream.push(out)) wanted = false;
    }
    if (!finished && inflight.length === 0 && next >= alignedStop) {
      finished = true;
      stream.push(null);
    }
  }

  function settle(slot: ReadSlot, err: unknown): void {
    slot.done = true;
    slot.error = err;
    if (finished) return;
    deliver();
    pump();
  }

  return stream;
}

/**
 * The bytes `start`..`end` (inclusive) of `target` as an async iteration of
 * chunks read in place: each chunk is a view of a device buffer (granted
 * to the backend once, no bounce copy and no copy to the caller), valid
 * only until the loop asks for the next one, which hands the buffer back
 * to the ring. Copy what must outlive a step. Up to `depth` reads of
 * `chunkSize` stay in flight while the caller works on the chunk it holds.
 * A failed read ends the loop with its error (typed, as the target raised
 * it); leaving the loop early gives every buffer back once its read settles.
 *
 * This is the way to read a disk at its speed: {@link createReadStream}
 * hands each chunk over as memory of the consumer's own, a fresh 1 MiB
 * allocation and copy per chunk.
 */
export async function* readChunks(target: BlockTarget, opts: BlockReadStreamOptions = {}): AsyncGenerator<Uint8Array, void, undefined> {
  const { chunk, depth, start, stop, first, alignedStop } = planRead(target, opts, 'read');
  if (stop <= start) return;
  let next = first;
  const all: Array<{ buf: Uint8Array; device: boolean }> = [];
  const free: Array<{ buf: Uint8Array; device: boolean }> = [];
  const queue: Array<{ slot: { buf: Uint8Array; device: boolean }; offset: number; length: number; read: Promise<void> }> = [];
  const issue = (): void => {
    while (queue.length < depth && next < alignedStop) {
      let slot = free.pop();
      if (slot === undefined) {
        slot = allocSlot(target, chunk);
        all.push(slot);
      }
      const length = Math.min(chunk, alignedStop - next);
      const read = target.readInto(next, slot.buf.subarray(0, length));
      // Awaited in order below; a failure behind the head must not go unhandled meanwhile.
      read.catch(() => undefined);
      queue.push({ slot, offset: next, length, read });
      next += length;
    }
  };
  try {
    issue();
    while (queue.length > 0) {
      const head = queue.shift()!;
      await head.read;
      // Keep `depth` in flight while the caller holds this one.
      issue();
      const from = Math.max(start, head.offset) - head.offset;
      const to = Math.min(stop, head.offset + head.length) - head.offset;
      yield head.slot.buf.subarray(from, to);
      free.push(head.slot);
    }
  } finally {
    await freeWhenSettled(
      target,
      queue.map((q) => q.read),
      all,
    );
  }
}

interface WriteSlot {
  buf: Uint8Array;
  device: boolean;
  busy: Promise<void> | null;
}

/**
 * A Writable that writes what it is given to `target` from byte `start` on,
 * `chunkSize` at a time with up to `depth` writes in flight. A start or end
 * that is not on a sector boundary is read, merged and written back whole
 * (the bytes around it are kept). Writing past the end of the target fails
 * with BLKIF_ERANGE before anything of that chunk is sent; any failure
 * fails the stream, with what was acknowledged before it written.
 */
export function createWriteStream(target: BlockTarget, opts: BlockWriteStreamOptions = {}): Writable {
  const ss = target.sectorSize;
  const chunk = chunkOf(target, opts.chunkSize);
  const depth = depthOf(opts.depth);
  const start = opts.start ?? 0;
  if (!Number.isSafeInteger(start) || start < 0 || start > target.size) {
    throw new BlkifError('BLKIF_ERANGE', `write stream start ${start} is not inside the disk (${target.size} bytes)`);
  }
  if (target.readOnly) throw new BlkifError('BLKIF_EROFS', 'write stream on a read-only disk');
  const slots: WriteSlot[] = [];
  let cur: WriteSlot | null = null;
  /** Disk offset of cur.buf[0] (sector-aligned). */
  let base = Math.floor(start / ss) * ss;
  /** Bytes of cur.buf that hold data (from base). */
  let fill = start - base;
  /** Whether cur.buf[0..fill) still needs the disk's bytes merged under it (an unaligned start). */
  let headGap = fill;
  let failure: Error | null = null;
  let written = start;
  let ringIdx = 0;

  const take = async (): Promise<WriteSlot> => {
    if (slots.length < depth) {
      const { buf, device } = allocSlot(target, chunk);
      const s: WriteSlot = { buf, device, busy: null };
      slots.push(s);
      return s;
    }
    // Reuse the slots round-robin: the oldest write is the next to finish, in the common case.
    const s = slots[ringIdx]!;
    ringIdx = (ringIdx + 1) % depth;
    if (s.busy !== null) await s.busy;
    return s;
  };

  const submit = async (s: WriteSlot, length: number): Promise<void> => {
    const at = base;
    base += length;
    if (headGap > 0) {
      // The first sector holds bytes before `start` that must not change.
      await mergeSector(target, at, s.buf, 0, 0, headGap);
      headGap = 0;
    }
    const p = target.write(at, s.buf.subarray(0, length));
    s.busy = p.then(
      () => {
        s.busy = null;
      },
      (err: unknown) => {
        s.busy = null;
        failure ??= err instanceof Error ? err : new BlkifError('BLKIF_EIO', String(err));
      },
    );
  };

  const stream = new Writable({
    highWaterMark: chunk,
    write(data: Buffer, _enc, cb) {
      void (async () => {
        let at = 0;
        while (at < data.length) {
          if (failure !== null) throw failure;
          if (cur === null) cur = await take();
          const n = Math.min(chunk - fill, data.length - at);
          if (base + fill + n > target.size) {
            throw new BlkifError('BLKIF_ERANGE', `write stream reaches past the end of the disk (${target.size} bytes)`);
          }
          cur.buf.set(data.subarray(at, at + n), fill);
          fill += n;
          at += n;
          written += n;
          if (fill === chunk) {
            const s = cur;
            cur = null;
            fill = 0;
            await submit(s, chunk);
          }
        }
      })().then(
        () => cb(),
        (err: unknown) => cb(err as Error),
      );
    },
    final(cb) {
      void (async () => {
        if (cur !== null && fill > 0) {
          const s = cur;
          cur = null;
          const length = Math.ceil(fill / ss) * ss;
          // The last sector holds bytes after the data that must not change.
          if (length !== fill) await mergeSector(target, base + length - ss, s.buf, length - ss, fill - (length - ss), ss);
          await submit(s, length);
        }
        await Promise.all(slots.flatMap((s) => (s.busy === null ? [] : [s.busy])));
        if (failure !== null) throw failure;
        if (opts.flush !== false) await target.flush();
      })().then(
        () => cb(),
        (err: unknown) => cb(err as Error),
      );
    },
    destroy(err, cb) {
      void freeWhenSettled(
        target,
        slots.map((s) => s.busy),
        slots,
      ).then(() => cb(err));
    },
  });
  Object.defineProperty(stream, 'bytesWritten', { get: () => written - start });
  return stream;
}
