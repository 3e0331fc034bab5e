/**
 * The character-device transport. No /dev/xen/xenbus here, so it runs over a
 * pair of FIFOs (reads that block on the thread pool, like the device's),
 * bridged to the simulated xenstored.
 */
import { execFileSync } from 'node:child_process';
import { createReadStream, createWriteStream, existsSync, mkdtempSync, openSync, rmSync, constants } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { DeviceByteStream, fdDeviceIo, openXenbusDevice, type DeviceIo } from '../../src/transport/xenbus_device.js';
import { XENSTORE_PAYLOAD_MAX, XS_HEADER_SIZE, decodeHeader, encodeMessage, joinPayload } from '../../src/wire/xs_wire.js';
import { XenstoreClient } from '../../src/xenbus/client.js';
import { SimXenstored } from '../../src/sim/xenstored/server.js';
import { XsType } from '../../src/wire/xs_wire.js';
import { XsFrameParser } from '../../src/wire/xs_parser.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

/** A client whose transport is a DeviceByteStream over two FIFOs, served by `sim`. */
function fifoClient(sim: SimXenstored): { client: XenstoreClient; seenTypes: number[] } {
  const dir = mkdtempSync(join(tmpdir(), 'xenbus-fifo-'));
  const up = join(dir, 'to-daemon');
  const down = join(dir, 'to-guest');
  execFileSync('mkfifo', [up, down]);
  // O_RDWR on a FIFO never blocks in open(), so both ends can be opened in any order.
  const guestRead = openSync(down, constants.O_RDWR);
  const guestWrite = openSync(up, constants.O_RDWR);
  const daemonIn = createReadStream(up);
  const daemonOut = createWriteStream(down);
  const seenTypes: number[] = [];
  const parser = new XsFrameParser();
  const server = sim.connect();
  server.start({
    data: (c) => daemonOut.write(c),
    writable: () => undefined,
    closed: () => daemonOut.end(),
  });
  daemonIn.on('data', (chunk) => {
    const c = chunk as Buffer;
    parser.push(c);
    for (let r = parser.next(); r.kind === 'message'; r = parser.next()) seenTypes.push(r.message.type);
    server.write(c);
  });
  cleanups.push(() => {
    daemonIn.destroy();
    daemonOut.destroy();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { client: new XenstoreClient(new DeviceByteStream(fdDeviceIo(guestRead, guestWrite))), seenTypes };
}

describe('DeviceByteStream', () => {
  it('carries a full client session, many requests in flight', async () => {
    const sim = new SimXenstored();
    const { client } = fifoClient(sim);
    await Promise.all(Array.from({ length: 200 }, (_, i) => client.write(`/dev/${i}`, 'x'.repeat(i * 10))));
    const got = await Promise.all(Array.from({ length: 200 }, (_, i) => client.read(`/dev/${i}`)));
    got.forEach((v, i) => expect(v.length).toBe(i * 10));
    const events: string[] = [];
    await client.watch('/dev/0', (e) => void events.push(e.path));
    await client.write('/dev/0', 'changed');
    await new Promise((r) => setTimeout(r, 50));
    expect(events).toEqual(['/dev/0', '/dev/0']);
    client.close();
    await client.closed;
  });

  it('wakes its blocked read on close so the process can exit', async () => {
    const sim = new SimXenstored();
    const { client, seenTypes } = fifoClient(sim);
    await client.write('/x', '1'); // a read is now blocked in the thread pool
    client.close();
    expect((await client.closed).code).toBe('XS_CLOSED');
    // The wake-up frame went out and was answered; the fds are closed.
    await new Promise((r) => setTimeout(r, 50));
    expect(seenTypes).toContain(XsType.GetDomainPath);
  });

  it('gives a typed error when the device is absent', async () => {
    const path = '/dev/xen/xenbus-not-here';
    expect(existsSync(path)).toBe(false);
    await expect(openXenbusDevice(path)).rejects.toMatchObject({ code: 'XS_CLOSED', message: expect.stringMatching(/not a Xen guest/) });
  });

  it('gives a typed error when the path cannot be opened read-write', async () => {
    // A directory refuses O_RDWR for root and everyone else alike.
    const dir = mkdtempSync(join(tmpdir(), 'notadev-'));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    await expect(openXenbusDevice(dir)).rejects.toMatchObject({ code: 'XS_CLOSED', message: expect.stringContaining(dir) });
  });
});

/**
 * What Linux's xenbus_file_write() and xenbus_file_read() do, in front of the
 * simulated xenstored: one message buffered per file (16 + 4096 bytes), a
 * write that would overflow it fails with EINVAL and empties it, the first
 * complete message is acted on and anything else in the buffer is dropped.
 * Reads return queued reply bytes, up to the size asked for.
 */
class LinuxXenbusDevice implements DeviceIo {
  private readonly buf = new Uint8Array(XS_HEADER_SIZE + XENSTORE_PAYLOAD_MAX);
  private len = 0;
  private readonly replies: Uint8Array[] = [];
  private waiter: (() => void) | null = null;
  private readonly server;
  /** Requests forwarded to xenstored, and bytes the "kernel" dropped. */
  forwarded = 0;
  dropped = 0;

  constructor(sim: SimXenstored, private readonly maxWrite = Infinity) {
    this.server = sim.connect();
    this.server.start({
      data: (c) => {
        this.replies.push(c);
        this.waiter?.();
      },
      writable: () => undefined,
      closed: () => undefined,
    });
  }

  async write(b: Uint8Array): Promise<number> {
    const n = Math.min(b.length, this.maxWrite);
    if (this.len + n > this.buf.length) {
      this.len = 0;
      throw Object.assign(new Error('EINVAL'), { code: 'EINVAL' });
    }
    this.buf.set(b.subarray(0, n), this.len);
    this.len += n;
    if (this.len < XS_HEADER_SIZE) return n;
    const total = XS_HEADER_SIZE + decodeHeader(this.buf).len;
    if (this.len < total) return n;
    this.server.write(this.buf.slice(0, total));
    this.forwarded++;
    this.dropped += this.len - total; // "Buffered message consumed": u->len = 0
    this.len = 0;
    return n;
  }

  async read(out: Uint8Array): Promise<number> {
    while (this.replies.length === 0) await new Promise<void>((r) => (this.waiter = r));
    this.waiter = null;
    let n = 0;
    while (this.replies.length > 0 && n < out.length) {
      const head = this.replies[0]!;
      const take = Math.min(head.length, out.length - n);
      out.set(head.subarray(0, take), n);
      n += take;
      if (take === head.length) this.replies.shift();
      else this.replies[0] = head.subarray(take);
    }
    return n;
  }

  close(): void {
    this.server.close();
  }
}

describe('DeviceByteStream against the kernel device\'s write rules', () => {
  it('the stand-in is faithful: two frames in one write(2) lose the second', async () => {
    const dev = new LinuxXenbusDevice(new SimXenstored());
    const two = new Uint8Array([
      ...encodeMessage(XsType.Write, 1, 0, joinPayload(['/a', '1'], false)),
      ...encodeMessage(XsType.Write, 2, 0, joinPayload(['/b', '2'], false)),
    ]);
    await dev.write(two);
    expect(dev.forwarded).toBe(1);
    expect(dev.dropped).toBeGreaterThan(0);
    await expect(dev.write(new Uint8Array(XS_HEADER_SIZE + XENSTORE_PAYLOAD_MAX + 1))).rejects.toMatchObject({ code: 'EINVAL' });
    dev.close();
  });

  it.each([['whole writes', Infinity], ['short writes of 7 bytes', 7]])('answers every request of a batch, with %s', async (_n, maxWrite) => {
    const sim = new SimXenstored();
    const dev = new LinuxXenbusDevice(sim, maxWrite);
    const stream = new DeviceByteStream(dev);
    const client = new XenstoreClient(stream);
    const n = 100;
    await Promise.all(Array.from({ length: n }, (_, i) => client.write(`/k/${i}`, 'v'.repeat(i))));
    const got = await Promise.all(Array.from({ length: n }, (_, i) => client.read(`/k/${i}`)));
    got.forEach((v, i) => expect(v.length).toBe(i));
    expect(dev.dropped).toBe(0);
    expect(dev.forwarded).toBe(2 * n);
    if (maxWrite === Infinity) expect(stream.writeCalls).toBe(2 * n); // exactly one frame per write(2)
    else expect(stream.writeCalls).toBeGreaterThan(2 * n);
    // A full 4096-byte payload fits the kernel's buffer exactly.
    await client.write('/max', 'm'.repeat(XENSTORE_PAYLOAD_MAX - '/max'.length - 1));
    expect((await client.read('/max')).length).toBe(XENSTORE_PAYLOAD_MAX - 5);
    client.close();
  });
});
