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
import { DeviceByteStream, openXenbusDevice } from '../../src/transport/xenbus_device.js';
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
  return { client: new XenstoreClient(new DeviceByteStream(guestRead, guestWrite)), seenTypes };
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
