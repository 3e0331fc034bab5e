import { close, open, read, write, constants } from 'node:fs';
import { XenstoreError } from '../errors.js';
import { XENSTORE_PAYLOAD_MAX, XS_HEADER_SIZE, XsType, decodeHeader, encodeMessage, joinPayload } from '../wire/xs_wire.js';
import type { ByteStream, ByteStreamHandlers } from './byte_stream.js';

/** The Linux guest's xenstore character device. */
export const DEFAULT_XENBUS_DEVICE = '/dev/xen/xenbus';

const READ_SIZE = 64 * 1024;
/** req_id of the frame that wakes a blocked read at close; the client never uses it. */
const WAKE_REQ_ID = 0xffffffff;

/** The file operations the device stream needs; a real fd by default, a stand-in in tests. */
export interface DeviceIo {
  /** Reads into `buf`; resolves with the byte count, 0 at end of file. May block for a long time. */
  read(buf: Uint8Array): Promise<number>;
  /** Writes from `buf`; resolves with the byte count, which may be short. */
  write(buf: Uint8Array): Promise<number>;
  close(): void;
}

/** {@link DeviceIo} over file descriptors (the same one twice for a real device). */
export function fdDeviceIo(readFd: number, writeFd: number = readFd): DeviceIo {
  return {
    read: (buf) => new Promise((resolve, reject) => read(readFd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n)))),
    write: (buf) => new Promise((resolve, reject) => write(writeFd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n)))),
    close: () => {
      close(readFd, () => undefined);
      if (writeFd !== readFd) close(writeFd, () => undefined);
    },
  };
}

/**
 * A {@link ByteStream} over a xenbus character device such as /dev/xen/xenbus.
 *
 * Writes: Linux's xenbus_file_write() keeps one message (header plus at most
 * XENSTORE_PAYLOAD_MAX bytes) per open file. It acts on the first complete
 * message in its buffer and discards whatever else that write(2) carried, and
 * it refuses a write that would overflow the buffer. So this stream takes the
 * client's batches whole, cuts them at frame boundaries and writes exactly one
 * frame per write(2), resuming a short write within that frame.
 *
 * Reads: Node cannot poll a character device, so reads run on libuv's thread
 * pool and block until the kernel has a reply; one is outstanding at a time.
 * A blocked read cannot be interrupted by close(2), so close() first sends a
 * harmless GET_DOMAIN_PATH whose reply wakes it, then closes the fd.
 */
export class DeviceByteStream implements ByteStream {
  private handlers: ByteStreamHandlers | null = null;
  /** Bytes accepted from the caller and not yet written: whole frames, possibly a partial last one. */
  private queue: Uint8Array = new Uint8Array(0);
  private queueStart = 0;
  private writing = false;
  private reading = false;
  private closing = false;
  private done = false;
  /** Resolved when the write queue empties (close() waits on it before its wake-up frame). */
  private idle: (() => void)[] = [];
  /** write(2) calls made (one frame each, or the rest of one). */
  writeCalls = 0;

  constructor(private readonly io: DeviceIo) {}

  start(handlers: ByteStreamHandlers): void {
    this.handlers = handlers;
    void this.readLoop();
  }

  /** Takes everything offered; the frames go out one per write(2). */
  write(data: Uint8Array): number {
    if (this.done || this.closing) return 0;
    const pending = this.queue.length - this.queueStart;
    const next = new Uint8Array(pending + data.length);
    next.set(this.queue.subarray(this.queueStart), 0);
    next.set(data, pending);
    this.queue = next;
    this.queueStart = 0;
    void this.pump();
    return data.length;
  }

  close(): void {
    if (this.closing || this.done) return;
    this.closing = true;
    if (!this.reading) {
      this.finish();
      return;
    }
    const wake = encodeMessage(XsType.GetDomainPath, WAKE_REQ_ID, 0, joinPayload(['0']));
    // Once queued frames are out, so it is not spliced into one of them.
    void this.whenWritten().then(() => this.io.write(wake)).catch(() => this.finish());
  }

  private whenWritten(): Promise<void> {
    if (!this.writing && this.queue.length === this.queueStart) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private async pump(): Promise<void> {
    if (this.writing) return;
    this.writing = true;
    try {
      for (;;) {
        const avail = this.queue.length - this.queueStart;
        if (avail < XS_HEADER_SIZE) break;
        const len = decodeHeader(this.queue, this.queueStart).len;
        if (len > XENSTORE_PAYLOAD_MAX) throw new Error(`refusing to write a ${len}-byte xenstore payload`);
        const frameLen = XS_HEADER_SIZE + len;
        if (avail < frameLen) break; // the rest of this frame has not been offered yet
        const frame = this.queue.subarray(this.queueStart, this.queueStart + frameLen);
        for (let off = 0; off < frame.length;) {
          this.writeCalls++;
          off += await this.io.write(off === 0 ? frame : frame.subarray(off));
          if (this.done) return;
        }
        this.queueStart += frameLen;
      }
    } catch (err) {
      this.finish(new XenstoreError('XS_EIO', `xenbus device write failed: ${(err as Error).message}`, { cause: err }));
      return;
    } finally {
      this.writing = false;
    }
    if (this.queueStart === this.queue.length) {
      this.queue = new Uint8Array(0);
      this.queueStart = 0;
      for (const r of this.idle.splice(0)) r();
    }
  }

  private async readLoop(): Promise<void> {
    while (!this.done) {
      this.reading = true;
      const buf = new Uint8Array(READ_SIZE);
      let n: number;
      try {
        n = await this.io.read(buf);
      } catch (err) {
        this.reading = false;
        if (this.closing) return this.finish();
        return this.finish(new XenstoreError('XS_EIO', `xenbus device read failed: ${(err as Error).message}`, { cause: err }));
      }
      this.reading = false;
      if (this.closing || n === 0) return this.finish();
      this.handlers?.data(buf.subarray(0, n));
    }
  }

  private finish(err?: Error): void {
    if (this.done) return;
    this.done = true;
    this.io.close();
    for (const r of this.idle.splice(0)) r();
    this.handlers?.closed(err);
  }
}

/**
 * Opens the xenbus character device. Fails with a clear XS_CLOSED error when
 * it is absent (not a Xen guest, or the xenbus device is not available) or not
 * accessible (the device is root-only).
 */
export function openXenbusDevice(path = DEFAULT_XENBUS_DEVICE): Promise<DeviceByteStream> {
  return new Promise((resolve, reject) => {
    open(path, constants.O_RDWR /* libuv adds O_CLOEXEC itself */, (err, fd) => {
      if (err) {
        const why = err.code === 'ENOENT'
          ? 'not a Xen guest, or the xenbus device is not available'
          : err.code === 'EACCES' || err.code === 'EPERM'
            ? 'permission denied (the device is root-only)'
            : err.message;
        return reject(new XenstoreError('XS_CLOSED', `cannot open ${path}: ${why}`, { cause: err }));
      }
      resolve(new DeviceByteStream(fdDeviceIo(fd)));
    });
  });
}
