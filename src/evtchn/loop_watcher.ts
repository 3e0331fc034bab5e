/**
 * Waking the event loop itself when an event channel fires, with no thread
 * in between. /dev/xen/evtchn supports poll(2), and a read(2) on it returns
 * the pending ports as 32-bit numbers; that is exactly a readable stream of
 * port numbers. Node's own pipe handle (libuv's uv_pipe_open) accepts any
 * pollable descriptor, so libuv's epoll watches the evtchn file with every
 * other descriptor of the loop, and each wake-up costs one read(2) on the
 * main thread: no worker-thread poll, no hand-off back to the loop, no re-arm.
 *
 * The handle comes from process.binding('pipe_wrap'), which Node keeps for
 * compatibility. Where it is missing, open() returns null and the caller
 * falls back to a poll on a worker thread.
 */
import { PlatformError } from '../errors.js';
import { Socket } from 'node:net';

interface PipeWrap {
  Pipe: new (type: number) => { open(fd: number): number; close(): void };
  constants: { SOCKET: number };
}

function pipeWrap(): PipeWrap | null {
  try {
    const b = (process as unknown as { binding(name: string): unknown }).binding('pipe_wrap') as Partial<PipeWrap> | undefined;
    return typeof b?.Pipe === 'function' && typeof b.constants?.SOCKET === 'number' ? (b as PipeWrap) : null;
  } catch {
    return null;
  }
}

/** Bytes read per wake-up: a page holds 1024 ports, more than a process binds. */
const READ_BYTES = 4096;
const PORT_BYTES = 4;

export class LoopWatcher {
  private closed = false;

  private constructor(private readonly socket: Socket) {}

  /**
   * Watches `fd` (which the watcher then owns and closes) on the event loop,
   * calling `onPort` for each port read and `onError` once if reading fails.
   * Returns null, leaving `fd` open, where Node offers no way to do it.
   */
  static open(fd: number, onPort: (port: number) => void, onError: (err: Error) => void): LoopWatcher | null {
    const binding = pipeWrap();
    if (binding === null) return null;
    const handle = new binding.Pipe(binding.constants.SOCKET);
    if (handle.open(fd) !== 0) {
      // open() failed before taking the descriptor; the empty handle is closed, the fd left to the caller.
      handle.close();
      return null;
    }
    // One buffer for every read: a wake-up allocates nothing.
    const buffer = Buffer.alloc(READ_BYTES);
    const socket = new Socket({
      handle: handle as never,
      readable: true,
      writable: false,
      onread: {
        buffer,
        callback: (n: number, buf: Uint8Array) => {
          // The kernel returns whole ports only (it rounds the count down to a multiple of 4).
          for (let at = 0; at + PORT_BYTES <= n; at += PORT_BYTES) {
            onPort((buf[at]! | (buf[at + 1]! << 8) | (buf[at + 2]! << 16) | (buf[at + 3]! << 24)) >>> 0);
          }
          return true;
        },
      },
    } as ConstructorParameters<typeof Socket>[0]);
    const w = new LoopWatcher(socket);
    socket.on('error', (err) => {
      if (w.closed) return;
      w.close();
      onError(err);
    });
    socket.on('end', () => {
      if (w.closed) return;
      w.close();
      onError(new PlatformError('XEN_ESYS', 'the event-channel device reported end of file'));
    });
    socket.resume();
    return w;
  }

  /** Keeps the process alive while ports are bound (as a pending poll would). */
  ref(): void {
    if (!this.closed) this.socket.ref();
  }

  unref(): void {
    if (!this.closed) this.socket.unref();
  }

  /** Stops watching and closes the descriptor. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
  }
}
