import { connect, type Socket } from 'node:net';
import { XenstoreError } from '../errors.js';
import type { ByteStream, ByteStreamHandlers } from './byte_stream.js';

/** dom0's xenstored socket (XEN_RUN_STORED/socket in Xen's tools). */
export const DEFAULT_XENSTORED_SOCKET = '/var/run/xenstored/socket';

/**
 * A {@link ByteStream} over a connected stream socket. Writes are taken whole
 * until the kernel buffer fills (socket.write returns false); then nothing is
 * taken until 'drain', so the client's own queue holds the backlog and can
 * still drop requests aborted before they were sent.
 */
export class SocketByteStream implements ByteStream {
  private blocked = false;
  private handlers: ByteStreamHandlers | null = null;
  private done = false;

  constructor(private readonly socket: Socket) {}

  start(handlers: ByteStreamHandlers): void {
    this.handlers = handlers;
    this.socket.on('data', (chunk: Buffer) => handlers.data(chunk));
    this.socket.on('drain', () => {
      this.blocked = false;
      handlers.writable();
    });
    this.socket.on('error', (err) => this.finish(err));
    this.socket.on('close', () => this.finish());
  }

  write(data: Uint8Array): number {
    if (this.blocked || this.done) return 0;
    // Handed over (see ByteStream.write): the socket may queue a view, no copy needed.
    if (!this.socket.write(Buffer.from(data.buffer, data.byteOffset, data.length))) this.blocked = true;
    return data.length;
  }

  close(): void {
    this.socket.destroy();
  }

  private finish(err?: Error): void {
    if (this.done) return;
    this.done = true;
    this.handlers?.closed(err);
  }
}

/**
 * Connects to xenstored's Unix socket (by default dom0's). Fails with
 * XS_CLOSED when nothing listens there.
 */
export function connectUnixSocket(path = DEFAULT_XENSTORED_SOCKET): Promise<SocketByteStream> {
  return new Promise((resolve, reject) => {
    const socket = connect(path);
    const onError = (err: Error): void => {
      reject(new XenstoreError('XS_CLOSED', `cannot connect to xenstored at ${path}: ${err.message}`, { cause: err }));
    };
    socket.once('error', onError);
    socket.once('connect', () => {
      socket.off('error', onError);
      socket.setNoDelay?.(true);
      resolve(new SocketByteStream(socket));
    });
  });
}
