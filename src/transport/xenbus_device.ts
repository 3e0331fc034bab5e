import { close, open, read, write, constants } from 'node:fs';
import { XenstoreError } from '../errors.js';
import { XENSTORE_PAYLOAD_MAX, XS_HEADER_SIZE, XsType, encodeMessage, joinPayload } from '../wire/xs_wire.js';
import { XsFrameParser } from '../wire/xs_parser.js';
import { Fifo } from '../util/fifo.js';
import type { MessageStream, MessageStreamHandlers, OutgoingMessage } from './message_stream.js';

/** The Linux guest's xenstore character device. */
export const DEFAULT_XENBUS_DEVICE = '/dev/xen/xenbus';

const READ_SIZE = 64 * 1024;
/** req_id of the frame that wakes a blocked read at close (reserved: a client never uses it). */
const WAKE_REQ_ID = 0xffffffff;
const RESERVED_REQ_IDS: ReadonlySet<number> = new Set([WAKE_REQ_ID]);

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
    write: (buf) =>
      new Promise((resolve, reject) => write(writeFd, buf, 0, buf.length, null, (err, n) => (err ? reject(err) : resolve(n)))),
    close: () => {
      close(readFd, () => undefined);
      if (writeFd !== readFd) close(writeFd, () => undefined);
    },
  };
}

/** One open file on the device: at most one request at xenstored at a time. */
interface Lane {
  readonly io: DeviceIo;
  readonly index: number;
  /** req_id of the request sent on this file and not yet answered, or null. */
  outstanding: number | null;
  /** Its type, to learn transaction ids and watch counts from the reply. */
  outstandingType: number;
  reading: boolean;
  /** Inbound bytes, cut into whole frames. */
  readonly inbound: XsFrameParser;
}

/**
 * A {@link MessageStream} over a xenbus character device such as
 * /dev/xen/xenbus, opened as several files ("lanes") so that several
 * requests can be at xenstored at once. It works on whole messages because
 * it routes each one by its type and transaction: each is encoded once, for
 * its write(2), and each reply parsed once, from its file.
 *
 * Why several files: Linux's xenbus_file_write() keeps one message per open
 * file and hands xenstored's ring a pointer into that buffer, which the
 * kernel's xenbus thread copies later. A second write(2) on the same file
 * before then rewrites the first request's body: xenstored sees the right
 * header with the wrong path or value (a write lands on another key, a
 * transaction end carries garbage and fails EINVAL). So each file has at most
 * one request outstanding, and its reply is the proof the buffer is free. The
 * kernel also acts on only the first complete message of a write(2), so each
 * frame goes out alone, a short write resumed within it, and a frame must fit
 * the file's 4096-byte buffer, header included.
 *
 * The kernel ties transactions and watches to the file that made them: a
 * request in a transaction goes on the file that started it, watches are set
 * and cleared on lane 0, and their events arrive there. Frames leave in the
 * order the client queued them; frames in flight on different files may be
 * handled by xenstored in either order (await one to order the next).
 *
 * Reads: Node cannot poll a character device, so reads run on libuv's thread
 * pool and block until the kernel has something. A file is read only while it
 * has a request outstanding (and lane 0 while watches exist), so an idle
 * client holds no pool thread. A blocked read cannot be interrupted by
 * close(2), so close() sends a harmless GET_DOMAIN_PATH on each idle file
 * still reading, whose reply wakes it, then closes the fds.
 */
export class XenbusDeviceStream implements MessageStream {
  readonly kind = 'messages';
  readonly reservedReqIds = RESERVED_REQ_IDS;
  private handlers: MessageStreamHandlers | null = null;
  private readonly lanes: Lane[];
  /** Messages waiting for a free lane, in the caller's order. */
  private readonly queue = new Fifo<OutgoingMessage>();
  /** Transaction id -> the lane that started it. */
  private readonly txLane = new Map<number, number>();
  /** Watches set on lane 0 and not cleared: while any exist, lane 0 is read. */
  private watches = 0;
  private closing = false;
  private done = false;
  /**
   * Linux's per-file buffer is XENSTORE_PAYLOAD_MAX bytes in all, header
   * included, and a write past it fails EINVAL: 4080 bytes of payload at most.
   */
  readonly maxPayload = XENSTORE_PAYLOAD_MAX - XS_HEADER_SIZE;
  /** write(2) calls made (one frame each, or the rest of one). */
  writeCalls = 0;
  /** Most requests outstanding at once across the files. */
  maxOutstanding = 0;

  /** One {@link DeviceIo} per open file of the same device (at least one). */
  constructor(io: DeviceIo | readonly DeviceIo[]) {
    const ios = Array.isArray(io) ? io : [io as DeviceIo];
    if (ios.length === 0) throw new XenstoreError('XS_EINVAL', 'XenbusDeviceStream needs at least one file');
    this.lanes = ios.map((d: DeviceIo, index): Lane => ({
      io: d,
      index,
      outstanding: null,
      outstandingType: 0,
      reading: false,
      inbound: new XsFrameParser(),
    }));
  }

  /** Files open on the device. */
  get files(): number {
    return this.lanes.length;
  }

  start(handlers: MessageStreamHandlers): void {
    this.handlers = handlers;
  }

  /** Takes every message; each goes out in a write(2) of its own, on a free file. */
  send(m: OutgoingMessage): boolean {
    if (this.done || this.closing) return true;
    if (m.payload.length > this.maxPayload) {
      // The client refuses these itself (maxPayload); one that gets here would fail EINVAL in the kernel.
      this.finish(new XenstoreError('XS_EIO', `refusing to write a ${m.payload.length}-byte payload (at most ${this.maxPayload})`));
      return true;
    }
    this.queue.push(m);
    this.dispatch();
    return true;
  }

  close(): void {
    if (this.closing || this.done) return;
    this.closing = true;
    this.queue.clear();
    const wake = encodeMessage(XsType.GetDomainPath, WAKE_REQ_ID, 0, joinPayload(['0']));
    for (const lane of this.lanes) {
      // A lane with a request outstanding is woken by its reply; an idle one
      // blocked on watch events needs a frame of its own.
      if (lane.reading && lane.outstanding === null) {
        lane.outstanding = WAKE_REQ_ID;
        lane.io.write(wake).catch(() => this.finish());
      }
    }
    this.finishIfQuiet();
  }

  /** Sends queued messages on free lanes, in order, until the head message has to wait. */
  private dispatch(): void {
    for (let m = this.queue.peek(); m !== undefined && !this.done; m = this.queue.peek()) {
      const lane = this.laneFor(m);
      if (lane === null) break;
      this.queue.shift();
      lane.outstanding = m.reqId;
      lane.outstandingType = m.type;
      let busy = 0;
      for (const l of this.lanes) if (l.outstanding !== null) busy++;
      if (busy > this.maxOutstanding) this.maxOutstanding = busy;
      void this.write(lane, encodeMessage(m.type, m.reqId, m.txId, m.payload));
      this.read(lane);
    }
  }

  /** The lane a message must go on, or null when that lane (or every lane) is busy. */
  private laneFor(m: OutgoingMessage): Lane | null {
    if (m.type === XsType.Watch || m.type === XsType.Unwatch) return this.free(0);
    if (m.txId !== 0) return this.free(this.txLane.get(m.txId) ?? 0);
    for (const lane of this.lanes) if (lane.outstanding === null) return lane;
    return null;
  }

  private free(index: number): Lane | null {
    const lane = this.lanes[index]!;
    return lane.outstanding === null ? lane : null;
  }

  /** One frame, one write(2) (a short one resumed within the frame). */
  private async write(lane: Lane, frame: Uint8Array): Promise<void> {
    try {
      for (let off = 0; off < frame.length;) {
        this.writeCalls++;
        off += await lane.io.write(off === 0 ? frame : frame.subarray(off));
        if (this.done) return;
      }
    } catch (err) {
      this.finish(new XenstoreError('XS_EIO', `xenbus device write failed: ${(err as Error).message}`, { cause: err }));
    }
  }

  /** Keeps one read going on the lane while it expects anything. */
  private read(lane: Lane): void {
    if (lane.reading || this.done) return;
    lane.reading = true;
    void this.readLoop(lane);
  }

  private expects(lane: Lane): boolean {
    return lane.outstanding !== null || (lane.index === 0 && this.watches > 0 && !this.closing);
  }

  private async readLoop(lane: Lane): Promise<void> {
    while (!this.done && this.expects(lane)) {
      const buf = new Uint8Array(READ_SIZE);
      let n: number;
      try {
        n = await lane.io.read(buf);
      } catch (err) {
        lane.reading = false;
        if (this.closing) return this.finishIfQuiet();
        return this.finish(new XenstoreError('XS_EIO', `xenbus device read failed: ${(err as Error).message}`, { cause: err }));
      }
      if (n === 0) {
        lane.reading = false;
        return this.closing ? this.finishIfQuiet() : this.finish();
      }
      this.received(lane, buf.subarray(0, n));
    }
    lane.reading = false;
    if (this.closing) this.finishIfQuiet();
  }

  /** Cuts a lane's bytes into messages, hands them on, and frees the lane at its reply. */
  private received(lane: Lane, chunk: Uint8Array): void {
    lane.inbound.push(chunk);
    let freed = false;
    for (let r = lane.inbound.next(); r.kind !== 'need'; r = lane.inbound.next()) {
      if (r.kind === 'error') {
        this.finish(new XenstoreError('XS_EPROTO', `xenbus device sent a bad frame: ${r.reason}`));
        return;
      }
      const m = r.message;
      if (m.type !== XsType.WatchEvent && m.reqId === lane.outstanding) {
        this.answered(lane, m.type, m.txId, m.payload);
        lane.outstanding = null;
        freed = true;
        if (m.reqId === WAKE_REQ_ID) continue; // ours, not the client's
      }
      if (!this.closing) this.handlers?.message(m);
    }
    if (freed) this.dispatch();
  }

  /** What a reply tells the stream about transactions and watches. */
  private answered(lane: Lane, type: number, txId: number, payload: Uint8Array): void {
    const sent = lane.outstandingType;
    if (type === XsType.Error) return;
    if (sent === XsType.TransactionStart) {
      const id = Number.parseInt(new TextDecoder().decode(payload), 10);
      if (Number.isInteger(id) && id > 0) this.txLane.set(id, lane.index);
    } else if (sent === XsType.TransactionEnd) {
      this.txLane.delete(txId);
    } else if (sent === XsType.Watch) {
      this.watches++;
    } else if (sent === XsType.Unwatch) {
      this.watches = Math.max(0, this.watches - 1);
    }
  }

  private finishIfQuiet(): void {
    if (this.lanes.every((l) => !l.reading)) this.finish();
  }

  private finish(err?: Error): void {
    if (this.done) return;
    this.done = true;
    for (const lane of this.lanes) lane.io.close();
    this.handlers?.closed(err);
  }
}

/** Files a device stream opens by default: requests at xenstored at once. */
export const DEFAULT_XENBUS_FILES = 3;

export interface XenbusDeviceOptions {
  /**
   * Files to open on the device (default {@link DEFAULT_XENBUS_FILES}): the
   * most requests at xenstored at once, as each file carries one at a time.
   * Each file waiting for a reply holds one of libuv's thread-pool threads
   * (4 unless UV_THREADPOOL_SIZE says otherwise), so keep it below that.
   */
  files?: number;
}

/**
 * Opens the xenbus character device. Fails with a clear XS_CLOSED error when
 * it is absent (not a Xen guest, or the xenbus device is not available) or not
 * accessible (the device is root-only).
 */
export async function openXenbusDevice(path = DEFAULT_XENBUS_DEVICE, opts: XenbusDeviceOptions = {}): Promise<XenbusDeviceStream> {
  const files = opts.files ?? DEFAULT_XENBUS_FILES;
  if (!Number.isInteger(files) || files < 1) throw new XenstoreError('XS_EINVAL', `files must be a positive integer, not ${files}`);
  const fds: number[] = [];
  try {
    for (let i = 0; i < files; i++) fds.push(await openOne(path));
  } catch (err) {
    for (const fd of fds) close(fd, () => undefined);
    throw err;
  }
  return new XenbusDeviceStream(fds.map((fd) => fdDeviceIo(fd)));
}

function openOne(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    open(path, constants.O_RDWR /* libuv adds O_CLOEXEC itself */, (err, fd) => {
      if (err) {
        const why =
          err.code === 'ENOENT'
            ? 'not a Xen guest, or the xenbus device is not available'
            : err.code === 'EACCES' || err.code === 'EPERM'
              ? 'permission denied (the device is root-only)'
              : err.message;
        return reject(new XenstoreError('XS_CLOSED', `cannot open ${path}: ${why}`, { cause: err }));
      }
      resolve(fd);
    });
  });
}
