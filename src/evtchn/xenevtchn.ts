/**
 * Event channels on a real Xen guest: libxenevtchn over /dev/xen/evtchn,
 * through koffi.
 *
 * Delivery never blocks the event loop. By default the event loop watches
 * the evtchn file itself (LoopWatcher: libuv's epoll, one read(2) per
 * wake-up, which returns the pending ports). Where Node offers no handle for
 * that, or with `wakeup: 'thread'`, a poll(2) on the evtchn fd and on an
 * eventfd of our own runs on koffi's worker thread (an async call); when it
 * returns, the main thread drains the pending ports (the fd is non-blocking)
 * and starts the next poll; close() writes to the eventfd to end the poll at
 * once. The kernel masks a port when it queues it for us; we unmask it before
 * calling the handler (so an event during the handler is not lost), or, while
 * the user holds it masked, when they unmask.
 */
import { spawn } from 'node:child_process';
import { closeSync, readSync, writeSync } from 'node:fs';
import { PlatformError, asError } from '../errors.js';
import { deviceOpenError, errnoName, loadKoffi, loadLibc, openLibrary, type Libc } from '../ffi/koffi.js';
import type { EventChannel, EventChannelStats, EventChannels } from './types.js';
import { LoopWatcher } from './loop_watcher.js';

/**
 * How the process learns that a port fired: 'event-loop' (the default) has
 * the event loop watch the evtchn file; 'thread' waits in poll(2) on a
 * worker thread and hands each wake-up back to the loop.
 */
export type EvtchnWakeup = 'event-loop' | 'thread';

export interface XenEventChannelsOptions {
  wakeup?: EvtchnWakeup;
}

export interface EvtchnLib {
  /** xenevtchn_open(NULL, 0): a handle, or null with errno set. */
  open(): unknown;
  fd(h: unknown): number;
  bindUnbound(h: unknown, domid: number): number;
  bindInterdomain(h: unknown, domid: number, remotePort: number): number;
  notify(h: unknown, port: number): number;
  /** The next pending port, or -1 (EAGAIN on our non-blocking fd). */
  pending(h: unknown): number;
  unmask(h: unknown, port: number): number;
  unbind(h: unknown, port: number): number;
  close(h: unknown): number;
  errno(): number;
}

export const LIBXENEVTCHN = ['libxenevtchn.so.1', 'libxenevtchn.so'];

/** Loads libxenevtchn and binds the functions. Throws XEN_ENOLIB when it is not installed. */
export function loadEvtchnLib(sonames: readonly string[] = LIBXENEVTCHN): EvtchnLib {
  const koffi = loadKoffi();
  const lib = openLibrary(sonames, 'libxenevtchn1');
  const f = {
    open: lib.func('void *xenevtchn_open(void *logger, unsigned int open_flags)'),
    fd: lib.func('int xenevtchn_fd(void *xce)'),
    bindUnbound: lib.func('int xenevtchn_bind_unbound_port(void *xce, uint32_t domid)'),
    bindInterdomain: lib.func('int xenevtchn_bind_interdomain(void *xce, uint32_t domid, uint32_t remote_port)'),
    notify: lib.func('int xenevtchn_notify(void *xce, uint32_t port)'),
    pending: lib.func('int xenevtchn_pending(void *xce)'),
    unmask: lib.func('int xenevtchn_unmask(void *xce, uint32_t port)'),
    unbind: lib.func('int xenevtchn_unbind(void *xce, uint32_t port)'),
    close: lib.func('int xenevtchn_close(void *xce)'),
  };
  return {
    open: (): unknown => f.open(null, 0) as unknown,
    fd: (h) => f.fd(h) as number,
    bindUnbound: (h, d) => f.bindUnbound(h, d) as number,
    bindInterdomain: (h, d, p) => f.bindInterdomain(h, d, p) as number,
    notify: (h, p) => f.notify(h, p) as number,
    pending: (h) => f.pending(h) as number,
    unmask: (h, p) => f.unmask(h, p) as number,
    unbind: (h, p) => f.unbind(h, p) as number,
    close: (h) => f.close(h) as number,
    errno: () => koffi.errno(),
  };
}

class XenEventChannel implements EventChannel {
  handler: (() => void) | null = null;
  masked = false;
  /** An event arrived while masked; the kernel keeps the port masked until we unmask. */
  held = false;
  open = true;

  constructor(
    private readonly owner: XenEventChannels,
    readonly port: number,
  ) {}

  notify(): void {
    this.owner.notify(this);
  }

  onEvent(handler: (() => void) | null): void {
    this.handler = handler;
  }

  mask(): void {
    this.masked = true;
  }

  unmask(): void {
    this.masked = false;
    if (this.held) {
      this.held = false;
      this.owner.fire(this);
    }
  }

  close(): void {
    this.owner.unbind(this);
  }
}

/** Hands `fd` to a detached `sleep` that never wakes, so the file outlives this process. */
function parkFile(fd: number): void {
  try {
    const child = spawn('sleep', ['2147483647'], { stdio: ['ignore', 'ignore', 'ignore', fd], detached: true });
    child.on('error', () => undefined);
    child.unref();
  } catch {
    // No helper: the file stays open in this process alone, until it exits.
  }
}

const POLLIN = 1;
const POLLFD_SIZE = 8; // struct pollfd { int fd; short events; short revents; }
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;

export class XenEventChannels implements EventChannels {
  private handle: unknown;
  private readonly fd: number;
  private readonly wakeFd: number;
  private readonly pollfds = Buffer.alloc(2 * POLLFD_SIZE);
  private readonly channels = new Map<number, XenEventChannel>();
  private polling = false;
  private closing = false;
  /** Abandoned after a restore: the handle stays open, unused, for the life of the process. */
  private abandoned = false;
  private notifications = 0;
  private deliveries = 0;
  private readonly libc: Libc;
  /** The event loop's own watch on the evtchn file; null when waking through a worker thread's poll. */
  private loop: LoopWatcher | null = null;

  /** Opens /dev/xen/evtchn. Throws XEN_ENODEV when this is not a Xen guest. */
  constructor(
    private readonly lib: EvtchnLib = loadEvtchnLib(),
    libc: Libc = loadLibc(),
    opts: XenEventChannelsOptions = {},
  ) {
    this.libc = libc;
    const h = lib.open();
    if (h === null || h === undefined) {
      throw deviceOpenError('xenevtchn_open', '/dev/xen/evtchn', 'xen-evtchn', lib.errno());
    }
    this.handle = h;
    this.fd = lib.fd(h);
    libc.setNonBlocking(this.fd);
    this.wakeFd = libc.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (this.wakeFd < 0) {
      lib.close(h);
      throw new PlatformError('XEN_ESYS', `eventfd failed (${errnoName(libc.errno())})`);
    }
    this.pollfds.writeInt32LE(this.fd, 0);
    this.pollfds.writeInt16LE(POLLIN, 4);
    this.pollfds.writeInt32LE(this.wakeFd, POLLFD_SIZE);
    this.pollfds.writeInt16LE(POLLIN, POLLFD_SIZE + 4);
    if ((opts.wakeup ?? 'event-loop') === 'event-loop') this.watchOnLoop();
  }

  /** How wake-ups arrive now: 'thread' also after the loop's watch failed. */
  get wakeup(): EvtchnWakeup {
    return this.loop === null ? 'thread' : 'event-loop';
  }

  /**
   * Hands a duplicate of the evtchn fd to the event loop (the watcher owns
   * and closes the duplicate; the handle keeps the original). Stays on the
   * worker-thread poll when that cannot be done.
   */
  private watchOnLoop(): void {
    const fd = this.libc.dup(this.fd);
    if (fd < 0) return;
    const w = LoopWatcher.open(
      fd,
      (port) => this.deliver(port),
      (err) => {
        // Not expected from a pollable device; keep delivering the other way rather than go deaf.
        process.emitWarning(`event-channel watch on the event loop failed, polling on a worker thread instead: ${err.message}`);
        this.loop = null;
        if (this.channels.size > 0) this.arm();
      },
    );
    if (w === null) {
      closeSync(fd);
      return;
    }
    w.unref(); // no port bound yet
    this.loop = w;
  }

  allocUnbound(remoteDomid: number): EventChannel {
    return this.adopt(this.lib.bindUnbound(this.live(), remoteDomid), `bind_unbound_port(${remoteDomid})`);
  }

  bindInterdomain(remoteDomid: number, remotePort: number): EventChannel {
    return this.adopt(this.lib.bindInterdomain(this.live(), remoteDomid, remotePort), `bind_interdomain(${remoteDomid}, ${remotePort})`);
  }

  /** @internal */
  notify(ch: XenEventChannel): void {
    if (!ch.open || this.abandoned) throw new PlatformError('XEN_EEVTCHN', `event channel port ${ch.port} is closed`);
    this.notifications++;
    if (this.lib.notify(this.handle, ch.port) < 0) {
      throw new PlatformError('XEN_EEVTCHN', `xenevtchn_notify(${ch.port}) failed (${errnoName(this.lib.errno())})`);
    }
  }

  /** @internal Unmasks in the kernel, then runs the handler. */
  fire(ch: XenEventChannel): void {
    if (!ch.open) return;
    this.lib.unmask(this.handle, ch.port);
    this.deliveries++;
    ch.handler?.();
  }

  /** @internal */
  unbind(ch: XenEventChannel): void {
    if (!ch.open) return;
    ch.open = false;
    ch.handler = null;
    this.channels.delete(ch.port);
    if (this.handle !== null) this.lib.unbind(this.handle, ch.port);
    if (this.channels.size === 0) this.loop?.unref();
  }

  stats(): EventChannelStats {
    return { notifications: this.notifications, deliveries: this.deliveries, openPorts: this.channels.size };
  }

  close(): void {
    if (this.handle === null || this.closing) return;
    for (const ch of [...this.channels.values()]) this.unbind(ch);
    this.closing = true;
    this.loop?.close();
    this.loop = null;
    if (this.polling)
      this.wake(); // the poll callback finishes the close
    else this.release();
  }

  /**
   * The kernel's record of the old ports is still there, and it is released
   * when the last reference to the handle's file goes, process exit
   * included: on kernels with the unbind BUG_ON (Linux 6.1's evtchn.c) that
   * release crashes the exiting process. So the file is also handed to a
   * sleeping helper process, which keeps it open, unused, until the domain
   * shuts down: the cost of surviving a restore on such a kernel is one idle
   * process and one file descriptor per restore.
   */
  abandon(): void {
    if (this.handle === null || this.closing) return;
    parkFile(this.fd);
    for (const ch of this.channels.values()) {
      ch.open = false;
      ch.handler = null;
    }
    this.channels.clear();
    this.abandoned = true;
    this.closing = true;
    // The loop's duplicate goes; the helper's reference keeps the file itself open.
    this.loop?.close();
    this.loop = null;
    // Only our own eventfd is touched: it ends the poll, whose callback then closes it.
    if (this.polling) this.wake();
    else closeSync(this.wakeFd);
  }

  private adopt(port: number, what: string): EventChannel {
    if (port < 0) {
      throw new PlatformError('XEN_EEVTCHN', `xenevtchn_${what} failed (${errnoName(this.lib.errno())})`);
    }
    const ch = new XenEventChannel(this, port);
    this.channels.set(port, ch);
    if (this.loop !== null) this.loop.ref();
    else this.arm();
    return ch;
  }

  private arm(): void {
    if (this.polling || this.closing || this.loop !== null) return;
    this.polling = true;
    this.libc.pollAsync(this.pollfds, 2, -1, (err, res) => {
      this.polling = false;
      if (this.abandoned) return closeSync(this.wakeFd);
      if (this.closing) return this.release();
      if (err !== null && err !== undefined) {
        // Not expected from poll(2) on two valid fds; retry rather than go deaf.
        process.emitWarning(`event-channel poll failed, retrying: ${asError(err).message}`);
        setTimeout(() => this.channels.size > 0 && this.arm(), 100).unref();
        return;
      }
      if (res > 0) {
        if ((this.pollfds.readInt16LE(POLLFD_SIZE + 6) & POLLIN) !== 0) this.drainWake();
        this.drain();
      }
      if (this.channels.size > 0) this.arm();
    });
  }

  /** Delivers every pending port the kernel has queued. */
  private drain(): void {
    for (;;) {
      const port = this.lib.pending(this.handle);
      if (port < 0) return;
      this.deliver(port);
      if (this.handle === null) return;
    }
  }

  /** One port the kernel queued (and masked) for us. */
  private deliver(port: number): void {
    const ch = this.channels.get(port);
    if (ch === undefined) return;
    if (ch.masked) ch.held = true;
    else this.fire(ch);
  }

  private wake(): void {
    const one = Buffer.alloc(8);
    one.writeBigUInt64LE(1n);
    writeSync(this.wakeFd, one);
  }

  private drainWake(): void {
    try {
      readSync(this.wakeFd, Buffer.alloc(8));
    } catch {
      // EAGAIN: already drained
    }
  }

  private release(): void {
    if (this.handle === null) return;
    this.lib.close(this.handle);
    this.handle = null;
    closeSync(this.wakeFd);
  }

  private live(): unknown {
    if (this.handle === null || this.closing) throw new PlatformError('XEN_CLOSED', 'event channels closed');
    return this.handle;
  }
}
