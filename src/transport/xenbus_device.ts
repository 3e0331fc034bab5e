import { close, open, read, write, constants } from 'node:fs';
import { XenstoreError } from '../errors.js';
import { XsType, encodeMessage, joinPayload } from '../wire/xs_wire.js';
import type { ByteStream, ByteStreamHandlers } from './byte_stream.js';

/** The Linux guest's xenstore character device. */
export const DEFAULT_XENBUS_DEVICE = '/dev/xen/xenbus';

const READ_SIZE = 64 * 1024;
/** req_id of the frame that wakes a blocked read at close; no client request uses it. */
const WAKE_REQ_ID = 0xffffffff;

/**
 * A {@link ByteStream} over a character device such as /dev/xen/xenbus.
 *
 * Node cannot poll a character device, so reads run on libuv's thread pool
 * and block until the kernel has a reply. One read is outstanding at a time.
 * A blocked read cannot be interrupted by close(2), so close() first sends a
 * harmless GET_DOMAIN_PATH whose reply wakes it, then closes the fd.
 *
 * The Linux driver takes partial frames on write and joins them, so a short
 * write is simply resumed from where it stopped.
 */
export class DeviceByteStream implements ByteStream {
  private handlers: ByteStreamHandlers | null = null;
  private writing: Uint8Array | null = null;
  private wantWritable = false;
  private reading = false;
  private closing = false;
  private done = false;

  /** `readFd` and `writeFd` are the same fd for a real device; tests may pass a pipe pair. */
  constructor(private readonly readFd: number, private readonly writeFd: number = readFd) {}

  start(handlers: ByteStreamHandlers): void {
    this.handlers = handlers;
    this.readLoop();
  }

  write(data: Uint8Array): number {
    if (this.done || this.closing) return 0;
    if (this.writing) {
      this.wantWritable = true;
      return 0;
    }
    this.writing = Uint8Array.from(data);
    this.pumpWrite(0);
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
    write(this.writeFd, wake, (err) => {
      if (err) this.finish(); // nothing to wake it with; the fd close below still frees it at exit
    });
  }

  private pumpWrite(off: number): void {
    const buf = this.writing!;
    write(this.writeFd, buf, off, buf.length - off, null, (err, n) => {
      if (err) return this.finish(new XenstoreError('XS_EIO', `xenbus device write failed: ${err.message}`, { cause: err }));
      if (off + n < buf.length) return this.pumpWrite(off + n);
      this.writing = null;
      if (this.wantWritable) {
        this.wantWritable = false;
        this.handlers?.writable();
      }
    });
  }

  private readLoop(): void {
    if (this.done) return;
    this.reading = true;
    const buf = Buffer.allocUnsafe(READ_SIZE);
    read(this.readFd, buf, 0, READ_SIZE, null, (err, n) => {
      this.reading = false;
      if (this.closing) return this.finish();
      if (err) return this.finish(new XenstoreError('XS_EIO', `xenbus device read failed: ${err.message}`, { cause: err }));
      if (n === 0) return this.finish();
      this.handlers?.data(buf.subarray(0, n));
      this.readLoop();
    });
  }

  private finish(err?: Error): void {
    if (this.done) return;
    this.done = true;
    close(this.readFd, () => undefined);
    if (this.writeFd !== this.readFd) close(this.writeFd, () => undefined);
    this.handlers?.closed(err);
  }
}

/**
 * Opens the xenbus character device. Fails with a clear XS_CLOSED error when
 * it is absent (not a Xen guest, or xenfs/xen-evtchn not loaded) or not
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
      resolve(new DeviceByteStream(fd));
    });
  });
}
