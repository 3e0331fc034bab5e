/**
 * The disk as libext2fs (WebAssembly) sees it: byte reads and writes of
 * whole file-system blocks, one at a time, each awaited. On a virtual disk
 * every one of them is a ring round trip, so this adapter does what a
 * kernel's page cache does: a small read fetches the whole window around
 * it and keeps it (16 MiB of them, least recently used dropped), and a read
 * that continues the previous one keeps the next windows coming
 * (readahead), so a large file streams at the ring's depth rather than one
 * block per round trip, and a tree of small files costs a round trip per
 * window rather than per block. Writes go through at once (the library orders its
 * own writes) and drop any cached window they touch, so what is read
 * afterwards is what was written. Offsets that are not sector-aligned (a
 * 1 KiB-block file system on 4 KiB sectors) are read whole and merged.
 */
import type { BlockTarget } from '../blkfront/target.js';
import { readRangeInto, writeRange } from '../disk/range.js';

export interface AdapterOptions {
  /** Readahead window in bytes (default 256 KiB; 0 turns readahead off). */
  readahead?: number;
  /** Windows fetched ahead of the reader (default 4). */
  ahead?: number;
  /** Bytes of windows kept for reuse (default 16 MiB). */
  cacheBytes?: number;
}

export interface AdapterStats {
  reads: number;
  writes: number;
  /** Reads answered from readahead windows. */
  cacheHits: number;
  /** Windows fetched. */
  windows: number;
  bytesRead: number;
  bytesWritten: number;
  /** Writes the library made while mounted read-only (access times): not sent to the disk. */
  droppedWrites: number;
}

interface Window {
  buf: Uint8Array;
  ready: Promise<Uint8Array>;
}

export class DiskAdapter {
  private readonly window: number;
  private readonly ahead: number;
  /** Windows kept (least recently used dropped first). */
  private readonly cached: number;
  private readonly cache = new Map<number, Window>();
  private lastEnd = -1;
  /** The last failure of the device, kept so a file error can name its cause (libext2fs reduces it to EIO). */
  lastError: unknown = null;
  readonly counts: AdapterStats = { reads: 0, writes: 0, cacheHits: 0, windows: 0, bytesRead: 0, bytesWritten: 0, droppedWrites: 0 };

  constructor(
    private readonly target: BlockTarget,
    private readonly readOnly: boolean,
    opts: AdapterOptions = {},
  ) {
    const ss = target.sectorSize;
    const w = opts.readahead ?? 256 << 10;
    this.window = w <= 0 ? 0 : Math.ceil(w / ss) * ss;
    this.ahead = opts.ahead ?? 4;
    this.cached = Math.max(1, Math.ceil((opts.cacheBytes ?? 16 << 20) / Math.max(this.window, 1)));
  }

  private note<T>(p: Promise<T>): Promise<T> {
    return p.catch((err: unknown) => {
      this.lastError = err;
      throw err;
    });
  }

  private fetch(idx: number): Window {
    let w = this.cache.get(idx);
    if (w !== undefined) {
      // Most recently used last: Map order is the LRU order.
      this.cache.delete(idx);
      this.cache.set(idx, w);
      return w;
    }
    const at = idx * this.window;
    const len = Math.min(this.window, this.target.size - at);
    const buf = new Uint8Array(len);
    const ready = this.target.readInto(at, buf).then(() => buf);
    w = { buf, ready };
    this.counts.windows++;
    this.cache.set(idx, w);
    ready.catch(() => {
      if (this.cache.get(idx) === w) this.cache.delete(idx);
    });
    const max = Math.max(this.ahead * 2 + 2, this.cached);
    while (this.cache.size > max) this.cache.delete(this.cache.keys().next().value!);
    return w;
  }

  async read(buffer: Uint8Array, bufferOffset: number, length: number, fileOffset: number): Promise<{ bytesRead: number }> {
    this.counts.reads++;
    this.counts.bytesRead += length;
    const dst = buffer.subarray(bufferOffset, bufferOffset + length);
    const sequential = fileOffset === this.lastEnd;
    this.lastEnd = fileOffset + length;
    const first = this.window > 0 ? Math.floor(fileOffset / this.window) : 0;
    // Small reads go through windows: a miss fetches the whole window around it (files and their
    // metadata sit close together, as mkfs and the allocator lay them out), and a read that
    // continues the previous one keeps `ahead` windows coming.
    if (this.window > 0 && length < this.window) {
      const last = Math.floor((fileOffset + length - 1) / this.window);
      let hit = true;
      for (let i = first; i <= last; i++) {
        if (!this.cache.has(i)) hit = false;
        const w = this.fetch(i);
        const buf = await this.note(w.ready);
        const from = Math.max(fileOffset, i * this.window);
        const to = Math.min(fileOffset + length, i * this.window + buf.length);
        dst.set(buf.subarray(from - i * this.window, to - i * this.window), from - fileOffset);
      }
      if (hit) this.counts.cacheHits++;
      if (sequential) {
        const lastWindow = Math.ceil(this.target.size / this.window) - 1;
        for (let i = last + 1; i <= Math.min(last + this.ahead, lastWindow); i++) this.fetch(i);
      }
      return { bytesRead: length };
    }
    await this.note(readRangeInto(this.target, fileOffset, dst));
    return { bytesRead: length };
  }

  async write(buffer: Uint8Array, bufferOffset: number, length: number, fileOffset: number): Promise<{ bytesWritten: number }> {
    if (this.readOnly) {
      // Mounted read-only, every change is refused before it reaches the library; what is left
      // are its own bookkeeping writes (access times, the mount count): they never reach the disk.
      this.counts.droppedWrites++;
      return { bytesWritten: length };
    }
    this.counts.writes++;
    this.counts.bytesWritten += length;
    const src = buffer.subarray(bufferOffset, bufferOffset + length);
    await this.note(writeRange(this.target, fileOffset, src));
    if (this.window > 0) this.dropWindows(fileOffset, src.byteLength);
    return { bytesWritten: length };
  }

  /**
   * Keeps the cache equal to the disk: the windows a write touches are
   * dropped, fetches under way included (the library does one thing at a
   * time, so no reader is waiting on one of them now).
   */
  private dropWindows(offset: number, length: number): void {
    const first = Math.floor(offset / this.window);
    const last = Math.floor((offset + length - 1) / this.window);
    for (let i = first; i <= last; i++) this.cache.delete(i);
  }

  async discard(offset: number, length: number): Promise<void> {
    if (this.readOnly || !this.target.canDiscard) return;
    const ss = this.target.sectorSize;
    const start = Math.ceil(offset / ss) * ss;
    const end = Math.floor((offset + length) / ss) * ss;
    if (end > start) await this.note(this.target.discard(start, end - start)).catch(() => undefined);
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.note(this.target.flush());
  }
}
