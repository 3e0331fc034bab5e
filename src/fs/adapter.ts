/**
 * The disk as libext2fs (WebAssembly) sees it: byte reads and writes of
 * whole file-system blocks, one at a time, each awaited. On a virtual disk
 * every one of them would be a ring round trip, so they go through a
 * CachedTarget (disk/cached.ts: windows, readahead, write-through), and a
 * tree of small files costs a round trip per window rather than per block.
 * Mounted read-only, the library's own bookkeeping writes are dropped here.
 */
import type { BlockTarget } from '../blkfront/target.js';
import { CachedTarget } from '../disk/cached.js';

export interface AdapterOptions {
  /** Cache and readahead window in bytes (default 64 KiB; 0 turns both off). */
  readahead?: number;
  /** Most windows fetched ahead of a sequential reader (default 32). */
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

export class DiskAdapter {
  private readonly cache: CachedTarget;
  /** The last failure of the device, kept so a file error can name its cause (libext2fs reduces it to EIO). */
  lastError: unknown = null;
  private readonly lib = { reads: 0, writes: 0, bytesRead: 0, bytesWritten: 0, droppedWrites: 0 };

  constructor(
    private readonly target: BlockTarget,
    private readonly readOnly: boolean,
    opts: AdapterOptions = {},
  ) {
    this.cache = new CachedTarget(target, { window: opts.readahead, ahead: opts.ahead, cacheBytes: opts.cacheBytes });
  }

  /** What the library asked for, and what the cache did. */
  get counts(): AdapterStats {
    return { ...this.lib, cacheHits: this.cache.stats.hits, windows: this.cache.stats.windows };
  }

  private note<T>(p: Promise<T>): Promise<T> {
    return p.catch((err: unknown) => {
      this.lastError = err;
      throw err;
    });
  }

  async read(buffer: Uint8Array, bufferOffset: number, length: number, fileOffset: number): Promise<{ bytesRead: number }> {
    this.lib.reads++;
    this.lib.bytesRead += length;
    await this.note(this.cache.readRange(fileOffset, buffer.subarray(bufferOffset, bufferOffset + length)));
    return { bytesRead: length };
  }

  async write(buffer: Uint8Array, bufferOffset: number, length: number, fileOffset: number): Promise<{ bytesWritten: number }> {
    if (this.readOnly) {
      // Mounted read-only, every change is refused before it reaches the library; what is left
      // are its own bookkeeping writes (access times, the mount count): they never reach the disk.
      this.lib.droppedWrites++;
      return { bytesWritten: length };
    }
    this.lib.writes++;
    this.lib.bytesWritten += length;
    await this.note(this.cache.writeRange(fileOffset, buffer.subarray(bufferOffset, bufferOffset + length)));
    return { bytesWritten: length };
  }

  async discard(offset: number, length: number): Promise<void> {
    if (this.readOnly || !this.target.canDiscard) return;
    const ss = this.target.sectorSize;
    const start = Math.ceil(offset / ss) * ss;
    const end = Math.floor((offset + length) / ss) * ss;
    if (end <= start) return;
    this.cache.drop(start, end - start);
    await this.note(this.target.discard(start, end - start)).catch(() => undefined);
  }

  /** Gives back what the cache holds of the disk's buffers; the adapter is not used afterwards. */
  close(): Promise<void> {
    return this.cache.close();
  }

  async flush(): Promise<void> {
    if (this.readOnly) return;
    await this.note(this.target.flush());
  }
}
