/**
 * A virtual block device, the package's main API: `openBlockDevice()`
 * returns one. Every call is checked before anything is queued; the engine
 * behind it (core.ts) follows the backend and the domain through reconnects
 * and restores.
 */
import { EventEmitter } from 'node:events';
import { BlkifError } from '../errors.js';
import { BLKIF_DISCARD_SECURE, BlkifOp } from '../wire/blkif.js';
import { DeviceCore } from './core.js';
import { CallKind } from './submit.js';
import type { BlockDeviceInfo } from './types.js';
import type { BlockDeviceEvents, BlockDeviceOptions, BlockDeviceStats } from './options.js';
import type { BlockTarget } from './target.js';

/** BLKIF_EINVAL or BLKIF_ERANGE unless `offset`/`length` is whole sectors inside the disk. */
export function checkRange(info: BlockDeviceInfo, what: string, offset: number, length: number): void {
  const ss = info.sectorSize;
  if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(length) || length < 0) {
    throw new BlkifError('BLKIF_EINVAL', `${what}: offset ${offset} and length ${length} must be non-negative integers`);
  }
  if (length === 0) throw new BlkifError('BLKIF_EINVAL', `${what}: zero length`);
  if (offset % ss !== 0 || length % ss !== 0) {
    throw new BlkifError('BLKIF_EINVAL', `${what}: offset ${offset} and length ${length} must be multiples of the ${ss}-byte sector size`);
  }
  if (offset + length > info.size) {
    throw new BlkifError('BLKIF_ERANGE', `${what}: bytes ${offset}..${offset + length} run past the end of the ${info.size}-byte disk`);
  }
}

/** BLKIF_EROFS on a read-only disk. */
export function checkWritable(info: BlockDeviceInfo, what: string): void {
  if (info.readOnly) throw new BlkifError('BLKIF_EROFS', `${what}: the disk is read-only`);
}

/**
 * A connected virtual block device. Open one with {@link openBlockDevice};
 * events are typed by {@link BlockDeviceEvents}.
 */
export class BlockDevice extends EventEmitter<BlockDeviceEvents> implements BlockTarget {
  private core!: DeviceCore;

  private constructor() {
    super();
  }

  /** @internal See {@link openBlockDevice}. */
  static async open(options: BlockDeviceOptions): Promise<BlockDevice> {
    const dev = new BlockDevice();
    dev.core = await DeviceCore.open(options, dev);
    return dev;
  }

  /** Geometry and negotiated features (replaced on resize, reconnect and resume, and when a feature turns out unsupported). */
  get info(): BlockDeviceInfo {
    return this.core.info;
  }

  /** Size in bytes (`info.size`). */
  get size(): number {
    return this.core.info.size;
  }

  /** Logical sector size (`info.sectorSize`). */
  get sectorSize(): number {
    return this.core.info.sectorSize;
  }

  get readOnly(): boolean {
    return this.core.info.readOnly;
  }

  /** Whether discard was negotiated. */
  get canDiscard(): boolean {
    return this.core.info.features.discard !== null;
  }

  /**
   * A buffer of `length` bytes (rounded up to whole pages) whose pages are
   * granted to the backend once, now: reads into it and writes from it
   * (whole or from any page boundary in it) go to the backend as they are,
   * with no bounce page and no copy. With persistent grants the backend
   * keeps them mapped, so the backend can write them at any time: trust
   * their contents only when a read into them has just completed.
   *
   * Valid until {@link close}, which ends the grants (on a real guest that
   * unmaps the memory: do not touch a device buffer after close).
   * {@link freeBuffer} keeps its pages for the next buffer of that size.
   * XEN_ENOSPC when the grant table or guest memory is full.
   */
  allocBuffer(length: number): Uint8Array {
    return this.core.allocBuffer(length);
  }

  /** Gives back a buffer from {@link allocBuffer}; BLKIF_EINVAL if calls still use it. */
  freeBuffer(buf: Uint8Array): void {
    this.core.freeBuffer(buf);
  }

  /**
   * Reads `length` bytes at byte `offset`. Both must be multiples of
   * `info.sectorSize` and inside the disk (BLKIF_EINVAL, BLKIF_ERANGE, checked
   * before anything is queued). Fails with BLKIF_EIO when the backend reports
   * an error, BLKIF_EPROTO when it breaks the protocol, BLKIF_ENODEV when it
   * goes away for good, BLKIF_CLOSED after close().
   */
  async read(offset: number, length: number): Promise<Uint8Array> {
    this.core.checkUsable();
    checkRange(this.core.info, 'read', offset, length);
    const buf = new Uint8Array(length);
    await this.core.submit(CallKind.read, BlkifOp.Read, offset, length, buf);
    return buf;
  }

  /**
   * Reads `dst.byteLength` bytes at byte `offset` into `dst`, the
   * allocation-free form of {@link read} for callers that reuse buffers;
   * same checks and errors. Ordinary memory is bounced through granted pages
   * (the backend never sees it); a device buffer ({@link allocBuffer}) is
   * read into in place. A read that fails may still have filled the parts of
   * `dst` whose pieces succeeded.
   */
  readInto(offset: number, dst: Uint8Array): Promise<void> {
    // Not an async function: the hot path makes one promise per call, not two.
    try {
      if (!(dst instanceof Uint8Array)) throw new BlkifError('BLKIF_EINVAL', 'readInto: dst must be a Uint8Array');
      this.core.checkUsable();
      checkRange(this.core.info, 'read', offset, dst.byteLength);
    } catch (err) {
      return Promise.reject(err);
    }
    return this.core.submit(CallKind.read, BlkifOp.Read, offset, dst.byteLength, dst);
  }

  /**
   * Writes `data` at byte `offset`; same checks as {@link read}, plus
   * BLKIF_EROFS on a read-only disk. `data` is copied into granted pages
   * when its request goes on the ring, which may be later if the ring or the
   * pool is full (a device buffer is read by the backend in place): leave it
   * unchanged until the call settles.
   */
  write(offset: number, data: Uint8Array): Promise<void> {
    try {
      if (!(data instanceof Uint8Array)) throw new BlkifError('BLKIF_EINVAL', 'write: data must be a Uint8Array');
      this.core.checkUsable();
      checkRange(this.core.info, 'write', offset, data.byteLength);
      checkWritable(this.core.info, 'write');
    } catch (err) {
      return Promise.reject(err);
    }
    return this.core.submit(CallKind.write, BlkifOp.Write, offset, data.byteLength, data);
  }

  /**
   * Makes the writes that completed before this call durable:
   * FLUSH_DISKCACHE, or WRITE_BARRIER when that is all the backend offers.
   * With neither, the backend has no volatile cache to flush and this
   * resolves at once. BLKIF_EOPNOTSUPP if the backend refuses after all
   * (the feature is then dropped from `info`).
   */
  async flush(): Promise<void> {
    this.core.checkUsable();
    const f = this.core.info.features;
    const op = f.flush ? BlkifOp.FlushDiskcache : f.barrier ? BlkifOp.WriteBarrier : -1;
    if (op < 0) {
      this.core.countFlush();
      return;
    }
    await this.core.submit(CallKind.flush, op, 0, 0, null);
  }

  /**
   * Tells the backend the range is unused (BLKIF_OP_DISCARD); with
   * `secure`, asks for a secure erase (only if the backend offers it).
   * Same checks as {@link write}; BLKIF_EOPNOTSUPP when discard was not
   * negotiated.
   */
  async discard(offset: number, length: number, opts: { secure?: boolean } = {}): Promise<void> {
    if (typeof opts !== 'object' || opts === null) throw new BlkifError('BLKIF_EINVAL', 'discard: options must be an object');
    this.core.checkUsable();
    checkRange(this.core.info, 'discard', offset, length);
    checkWritable(this.core.info, 'discard');
    const d = this.core.info.features.discard;
    if (d === null) throw new BlkifError('BLKIF_EOPNOTSUPP', 'discard: the backend does not offer it');
    if (opts.secure === true && !d.secure) throw new BlkifError('BLKIF_EOPNOTSUPP', 'discard: the backend does not offer secure discard');
    await this.core.submit(CallKind.discard, BlkifOp.Discard, offset, length, null, opts.secure === true ? BLKIF_DISCARD_SECURE : 0);
  }

  /** Counters since open (see {@link BlockDeviceStats}). */
  stats(): BlockDeviceStats {
    return this.core.stats();
  }

  /**
   * Drains what is in flight (up to the timeout; then it fails with
   * BLKIF_CLOSED), closes the xenbus connection (Closing, then Closed once
   * the backend follows), unbinds the event channels and ends every grant.
   * Calls made after this starts fail with BLKIF_CLOSED. Every call of it
   * settles when the one close does.
   */
  close(): Promise<void> {
    return this.core.close();
  }
}

/**
 * Opens virtual block device `vdev` of this domain: finds it in xenstore,
 * runs the handshake with its backend, and returns it connected. Fails with
 * BLKIF_EINVAL for bad options, BLKIF_ENODEV when there is no such device or
 * the backend does not answer within `timeoutMs`.
 */
export function openBlockDevice(options: BlockDeviceOptions): Promise<BlockDevice> {
  return BlockDevice.open(options);
}
