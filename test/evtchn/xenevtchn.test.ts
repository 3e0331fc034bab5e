import { readSync, writeSync, closeSync } from 'node:fs';
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { XenEventChannels, type EvtchnLib } from '../../src/evtchn/xenevtchn.js';
import { loadKoffi, loadLibc, openLibrary } from '../../src/ffi/koffi.js';
import { isXenError } from '../../src/errors.js';
import { until } from '../helpers/xs.js';

const onXen = existsSync('/dev/xen/evtchn');

/**
 * libxenevtchn's contract with /dev/xen/evtchn replaced by a pipe: the fd
 * becomes readable when a port is pending, pending() reads one port, and a
 * notify is echoed back as an event on the same port (a remote that answers).
 * The event loop's watch on the fd, the poll on koffi's thread, the
 * non-blocking drain and the wake-up on close are the real code.
 */
function pipeLib(): EvtchnLib & { unmasks: number[]; closed: number; raise(port: number): void; nextPort: number } {
  const koffi = loadKoffi();
  const libc = openLibrary(['libc.so.6'], 'libc6');
  const pipe = libc.func('int pipe(_Out_ int *fds)');
  const fds = new Int32Array(2);
  if ((pipe(fds) as number) !== 0) throw new Error('pipe failed');
  const [rd, wr] = [fds[0]!, fds[1]!];
  const lib = {
    unmasks: [] as number[],
    closed: 0,
    nextPort: 5,
    raise: (port: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(port);
      writeSync(wr, b);
    },
    open: () => ({ xce: true }),
    fd: () => rd,
    bindUnbound: () => lib.nextPort++,
    bindInterdomain: () => lib.nextPort++,
    notify: (_h: unknown, port: number) => (lib.raise(port), 0),
    pending: () => {
      const b = Buffer.alloc(4);
      try {
        return readSync(rd, b) === 4 ? b.readUInt32LE() : -1;
      } catch {
        return -1; // EAGAIN: the fd was made non-blocking
      }
    },
    unmask: (_h: unknown, port: number) => (lib.unmasks.push(port), 0),
    unbind: () => 0,
    close: () => {
      lib.closed++;
      closeSync(rd);
      closeSync(wr);
      return 0;
    },
    errno: () => koffi.errno(),
  };
  return lib;
}

describe('real-Xen event channels (libxenevtchn through koffi)', () => {
  it.skipIf(onXen)('without /dev/xen: XEN_ENODEV, "not a Xen guest", from the library itself', () => {
    try {
      new XenEventChannels();
      expect.unreachable();
    } catch (err) {
      expect(isXenError(err, 'XEN_ENODEV')).toBe(true);
      expect((err as Error).message).toMatch(/\/dev\/xen\/evtchn is missing .*xen-evtchn not loaded/);
    }
  });

  it('wakes on the event loop itself by default, with no poll on a worker thread', () => {
    const chans = new XenEventChannels(pipeLib());
    expect(chans.wakeup).toBe('event-loop');
    chans.close();
    const threaded = new XenEventChannels(pipeLib(), loadLibc(), { wakeup: 'thread' });
    expect(threaded.wakeup).toBe('thread');
    threaded.close();
  });
});

describe("the event loop's watch failing", () => {
  it('falls back to a poll on a worker thread, with a warning, and loses no event', async () => {
    const lib = pipeLib();
    const chans = new XenEventChannels(lib, loadLibc(), { wakeup: 'event-loop' });
    const a = chans.allocUnbound(0);
    let calls = 0;
    a.onEvent(() => calls++);
    const warned = new Promise<Error>((resolve) => process.once('warning', resolve));
    // What a read error on the device would do: the watcher's stream fails.
    (chans as unknown as { loop: { socket: { destroy(e: Error): void } } }).loop.socket.destroy(new Error('EIO'));
    expect((await warned).message).toMatch(/polling on a worker thread instead: EIO/);
    expect(chans.wakeup).toBe('thread');
    lib.raise(a.port);
    await until(() => calls === 1);
    chans.close();
    await until(() => lib.closed === 1, 2000);
  });
});

describe.each(['event-loop', 'thread'] as const)('real-Xen event channels, waking through the %s', (wakeup) => {
  const open = (lib: EvtchnLib) => new XenEventChannels(lib, loadLibc(), { wakeup });

  it('waits on the fd without blocking the event loop and delivers each pending port, unmasking it first', async () => {
    const lib = pipeLib();
    const chans = open(lib);
    const a = chans.allocUnbound(0);
    const b = chans.bindInterdomain(0, 9);
    const got: string[] = [];
    a.onEvent(() => got.push(`a:${lib.unmasks.at(-1)}`));
    b.onEvent(() => got.push(`b:${lib.unmasks.at(-1)}`));
    // The event loop is free while the poll waits.
    await new Promise((r) => setTimeout(r, 20));
    a.notify();
    lib.raise(b.port);
    await until(() => got.length === 2);
    expect(got).toEqual([`a:${a.port}`, `b:${b.port}`]);
    expect(chans.stats()).toMatchObject({ notifications: 1, deliveries: 2, openPorts: 2 });
    chans.close();
  });

  it('a masked channel keeps its event (and the kernel mask) until unmask', async () => {
    const lib = pipeLib();
    const chans = open(lib);
    const a = chans.allocUnbound(0);
    let calls = 0;
    a.onEvent(() => calls++);
    a.mask();
    a.notify();
    await new Promise((r) => setTimeout(r, 30));
    expect(calls).toBe(0);
    expect(lib.unmasks).toEqual([]);
    a.unmask();
    expect(calls).toBe(1);
    expect(lib.unmasks).toEqual([a.port]);
    chans.close();
  });

  it('close() ends the wait at once and releases the handle', async () => {
    const lib = pipeLib();
    const chans = open(lib);
    chans.allocUnbound(0);
    await new Promise((r) => setTimeout(r, 10));
    chans.close();
    await until(() => lib.closed === 1, 2000);
    expect(() => chans.allocUnbound(0)).toThrow(expect.objectContaining({ code: 'XEN_CLOSED' }));
  });

  it('a failed bind is XEN_EEVTCHN with the errno name', () => {
    const lib = pipeLib();
    lib.bindUnbound = () => -1;
    lib.errno = () => 1; // EPERM
    const chans = open(lib);
    expect(() => chans.allocUnbound(3)).toThrow(expect.objectContaining({ code: 'XEN_EEVTCHN', message: expect.stringMatching(/EPERM/) }));
    chans.close();
  });

  it('delivers every port one wake-up brings, each once, and none after its unbind', async () => {
    const lib = pipeLib();
    const chans = open(lib);
    const ports = Array.from({ length: 8 }, () => chans.allocUnbound(0));
    const got = new Map<number, number>();
    for (const ch of ports) ch.onEvent(() => got.set(ch.port, (got.get(ch.port) ?? 0) + 1));
    // All eight pending before the loop looks: one readable wake-up carries them all.
    for (const ch of ports) lib.raise(ch.port);
    await until(() => got.size === 8);
    expect([...got.values()]).toEqual(Array(8).fill(1));
    ports[0]!.close();
    lib.raise(ports[0]!.port);
    lib.raise(ports[1]!.port);
    await until(() => got.get(ports[1]!.port) === 2);
    expect(got.get(ports[0]!.port)).toBe(1);
    chans.close();
  });
});
