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
import { XenbusDeviceStream, fdDeviceIo, openXenbusDevice, type DeviceIo } from '../../src/transport/xenbus_device.js';
import { XENSTORE_PAYLOAD_MAX, XS_HEADER_SIZE, decodeHeader, encodeMessage, joinPayload } from '../../src/wire/xs_wire.js';
import { XenstoreClient } from '../../src/xenbus/client.js';
import { SimXenstored } from '../../src/sim/xenstored/server.js';
import { XsType } from '../../src/wire/xs_wire.js';
import { XsFrameParser } from '../../src/wire/xs_parser.js';

const cleanups: (() => void)[] = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()!();
});

/** A client whose transport is a XenbusDeviceStream over two FIFOs, served by `sim`. */
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
  return { client: new XenstoreClient(new XenbusDeviceStream(fdDeviceIo(guestRead, guestWrite))), seenTypes };
}

describe('XenbusDeviceStream', () => {
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

  it('reads nothing while idle, and wakes its blocked read on close so the process can exit', async () => {
    const sim = new SimXenstored();
    const { client, seenTypes } = fifoClient(sim);
    await client.write('/x', '1');
    await client.watch('/x', () => undefined); // lane 0 now waits for events in the thread pool
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
 * What Linux's xenbus driver does between its files and xenstored, in front
 * of the simulated xenstored: every file's requests share the kernel's one
 * connection, under the kernel's own req_ids (the caller's restored in the
 * reply); transaction ids are the connection's, and a file may use only the
 * ones it started (others get ENOENT, as xenbus_write_transaction() answers);
 * watch events go to the file that set the watch.
 */
class LinuxXenbusKernel {
  private readonly conn;
  private readonly parser = new XsFrameParser();
  private nextReq = 1;
  private readonly pending = new Map<number, { file: LinuxXenbusDevice; callerReqId: number; type: number }>();
  private readonly watchOwners = new Map<string, LinuxXenbusDevice>();

  constructor(sim: SimXenstored) {
    this.conn = sim.connect();
    this.conn.start({
      data: (c) => {
        this.parser.push(c);
        for (let r = this.parser.next(); r.kind === 'message'; r = this.parser.next())
          this.reply(r.message.type, r.message.reqId, r.message.txId, r.message.payload);
      },
      writable: () => undefined,
      closed: () => undefined,
    });
  }

  /** The header is taken now; the body is read from the file's buffer when "the xenbus thread" sends it. */
  submit(file: LinuxXenbusDevice, header: { type: number; reqId: number; txId: number; len: number }, body: () => Uint8Array): void {
    const reqId = this.nextReq++;
    this.pending.set(reqId, { file, callerReqId: header.reqId, type: header.type });
    setTimeout(() => {
      const payload = body().slice(0, header.len);
      if (header.type === XsType.Watch) this.watchOwners.set(new TextDecoder().decode(payload).split('\0')[1] ?? '', file);
      this.conn.write(encodeMessage(header.type, reqId, header.txId, payload));
    }, 1);
  }

  private reply(type: number, reqId: number, txId: number, payload: Uint8Array): void {
    if (type === XsType.WatchEvent) {
      const token = new TextDecoder().decode(payload).split('\0')[1] ?? '';
      this.watchOwners.get(token)?.deliver(encodeMessage(type, 0, 0, payload));
      return;
    }
    const p = this.pending.get(reqId);
    if (!p) return;
    this.pending.delete(reqId);
    if (p.type === XsType.TransactionStart && type !== XsType.Error)
      p.file.txIds.add(Number.parseInt(new TextDecoder().decode(payload), 10));
    if (p.type === XsType.TransactionEnd) p.file.txIds.delete(txId);
    p.file.deliver(encodeMessage(type, p.callerReqId, txId, payload));
  }

  close(): void {
    this.conn.close();
  }
}

/**
 * One open file of Linux's /dev/xen/xenbus (xenbus_file_write/read): one
 * message buffered per file (4096 bytes, header included); a write that would overflow it
 * fails with EINVAL and empties it; the first complete message is acted on and
 * anything else in the buffer is dropped; the body stays in the buffer until
 * the kernel sends it, so a second write before then rewrites it. Reads return
 * queued bytes, up to the size asked for.
 */
class LinuxXenbusDevice implements DeviceIo {
  private readonly buf = new Uint8Array(XENSTORE_PAYLOAD_MAX); // header included, as the kernel's union is
  private len = 0;
  private readonly replies: Uint8Array[] = [];
  private waiter: (() => void) | null = null;
  private readonly kernel: LinuxXenbusKernel;
  private readonly ownKernel: boolean;
  /** Transactions this file started. */
  readonly txIds = new Set<number>();
  /** Requests forwarded to xenstored, and bytes the "kernel" dropped. */
  forwarded = 0;
  dropped = 0;

  constructor(
    via: SimXenstored | LinuxXenbusKernel,
    private readonly maxWrite = Infinity,
  ) {
    this.ownKernel = !(via instanceof LinuxXenbusKernel);
    this.kernel = via instanceof LinuxXenbusKernel ? via : new LinuxXenbusKernel(via);
  }

  deliver(frame: Uint8Array): void {
    this.replies.push(frame);
    this.waiter?.();
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
    const h = decodeHeader(this.buf);
    const total = XS_HEADER_SIZE + h.len;
    if (this.len < total) return n;
    this.dropped += this.len - total; // "Buffered message consumed": u->len = 0
    this.len = 0;
    if (h.txId !== 0 && !this.txIds.has(h.txId)) {
      this.deliver(encodeMessage(XsType.Error, h.reqId, h.txId, joinPayload(['ENOENT'])));
      return n;
    }
    this.kernel.submit(this, h, () => this.buf.subarray(XS_HEADER_SIZE));
    this.forwarded++;
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
    if (this.ownKernel) this.kernel.close();
  }
}

describe("XenbusDeviceStream against the kernel device's write rules", () => {
  it('the stand-in is faithful: a second write before the first is sent rewrites its body', async () => {
    const sim = new SimXenstored();
    const dev = new LinuxXenbusDevice(sim);
    await dev.write(encodeMessage(XsType.Write, 1, 0, joinPayload(['/first', 'AAAA'], false)));
    await dev.write(encodeMessage(XsType.Write, 2, 0, joinPayload(['/second', 'BBB'], false)));
    const out = new Uint8Array(4096);
    let got = 0;
    while (got < 2 * (XS_HEADER_SIZE + 3)) got += await dev.read(out.subarray(got));
    // Both were answered OK, but request 1 kept only its header (the same
    // length, 11) and carried request 2's bytes: /first was never written.
    const check = new XenstoreClient(new XenbusDeviceStream(new LinuxXenbusDevice(sim)));
    expect(await check.readOptional('/first')).toBeUndefined();
    expect(await check.read('/second')).toBe('BBB');
    check.close();
    dev.close();
  });

  it('the stand-in is faithful: two frames in one write(2) lose the second', async () => {
    const dev = new LinuxXenbusDevice(new SimXenstored());
    const two = new Uint8Array([
      ...encodeMessage(XsType.Write, 1, 0, joinPayload(['/a', '1'], false)),
      ...encodeMessage(XsType.Write, 2, 0, joinPayload(['/b', '2'], false)),
    ]);
    await dev.write(two);
    expect(dev.forwarded).toBe(1);
    expect(dev.dropped).toBeGreaterThan(0);
    await expect(dev.write(new Uint8Array(XENSTORE_PAYLOAD_MAX + 1))).rejects.toMatchObject({ code: 'EINVAL' });
    dev.close();
  });

  it.each([
    ['whole writes', Infinity],
    ['short writes of 7 bytes', 7],
  ])('answers every request of a batch, with %s', async (_n, maxWrite) => {
    const sim = new SimXenstored();
    const dev = new LinuxXenbusDevice(sim, maxWrite);
    const stream = new XenbusDeviceStream(dev);
    expect(stream.files).toBe(1);
    const client = new XenstoreClient(stream);
    const n = 100;
    await Promise.all(Array.from({ length: n }, (_, i) => client.write(`/k/${i}`, 'v'.repeat(i))));
    const got = await Promise.all(Array.from({ length: n }, (_, i) => client.read(`/k/${i}`)));
    got.forEach((v, i) => expect(v.length).toBe(i));
    expect(dev.dropped).toBe(0);
    expect(dev.forwarded).toBe(2 * n);
    if (maxWrite === Infinity)
      expect(stream.writeCalls).toBe(2 * n); // exactly one frame per write(2)
    else expect(stream.writeCalls).toBeGreaterThan(2 * n);
    // 4080 bytes of payload fill the kernel's 4096-byte buffer exactly; one
    // more is refused before it is sent, and the connection carries on.
    const fits = XENSTORE_PAYLOAD_MAX - XS_HEADER_SIZE - '/max'.length - 1;
    await client.write('/max', 'm'.repeat(fits));
    expect((await client.read('/max')).length).toBe(fits);
    await expect(client.write('/max', 'm'.repeat(fits + 1))).rejects.toMatchObject({ code: 'XS_E2BIG' });
    expect((await client.read('/max')).length).toBe(fits);
    client.close();
  });
});

describe('XenbusDeviceStream over several files of the kernel device', () => {
  function lanes(sim: SimXenstored, n: number): LinuxXenbusDevice[] {
    const kernel = new LinuxXenbusKernel(sim);
    cleanups.push(() => kernel.close());
    return Array.from({ length: n }, () => new LinuxXenbusDevice(kernel));
  }

  it('keeps one request at xenstored per file, and every answer is right', async () => {
    const sim = new SimXenstored();
    const devs = lanes(sim, 3);
    const stream = new XenbusDeviceStream(devs);
    const client = new XenstoreClient(stream);
    const n = 150;
    await Promise.all(Array.from({ length: n }, (_, i) => client.write(`/k/${i}`, `value-${i}`)));
    const got = await Promise.all(Array.from({ length: n }, (_, i) => client.read(`/k/${i}`)));
    got.forEach((v, i) => expect(v).toBe(`value-${i}`));
    expect((await client.directory('/k')).length).toBe(n);
    expect(stream.maxOutstanding).toBe(3);
    // Every file carried a share of the load.
    for (const d of devs) expect(d.forwarded).toBeGreaterThan(n / 3);
    client.close();
  });

  it("sends a transaction's requests on the file that started it, and watch traffic on file 0", async () => {
    const sim = new SimXenstored();
    const devs = lanes(sim, 3);
    const client = new XenstoreClient(new XenbusDeviceStream(devs));
    await client.write('/c', '0');
    // Concurrent transactions start on different files; a request routed to
    // another file would get ENOENT (the transaction is that connection's).
    let attempts = 0;
    await Promise.all(
      Array.from({ length: 6 }, () =>
        client.transaction(
          async (t) => {
            attempts++;
            const v = Number(await t.read('/c'));
            await t.write('/c', String(v + 1));
          },
          { maxAttempts: 64 },
        ),
      ),
    );
    expect(await client.read('/c')).toBe('6');
    expect(attempts).toBeGreaterThanOrEqual(6);
    const events: string[] = [];
    const w = await client.watch('/c', (e) => void events.push(e.path));
    await Promise.all([client.write('/c', 'x'), client.write('/d', 'y'), client.write('/c', 'z')]);
    await new Promise((r) => setTimeout(r, 50));
    expect(events.filter((p) => p === '/c').length).toBe(3); // registration and two writes
    await w.unwatch();
    client.close();
  });
});
