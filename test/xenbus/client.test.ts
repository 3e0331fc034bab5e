/**
 * The xenstore client against the simulated xenstored, over a real Unix
 * socket and over a pipe that cuts every frame into 1..7-byte pieces and
 * takes at most 64 bytes per write.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { XenstoreError, isXenError } from '../../src/errors.js';
import { XENSTORE_PAYLOAD_MAX } from '../../src/wire/xs_wire.js';
import { TRANSPORTS, xsFixture, type XsFixture } from '../helpers/xs.js';

describe.each(TRANSPORTS)('XenstoreClient over %s', (kind) => {
  let fx: XsFixture;
  beforeEach(async () => {
    fx = await xsFixture(kind);
  });
  afterEach(() => fx.close());

  it('writes, reads, lists and removes', async () => {
    const xs = fx.client;
    await xs.write('/vm/1/name', 'guest');
    await xs.write('/vm/1/memory', '512');
    await xs.mkdir('/vm/1/device');
    expect(await xs.read('/vm/1/name')).toBe('guest');
    expect(await xs.read('/vm/1/device')).toBe('');
    expect((await xs.directory('/vm/1')).sort()).toEqual(['device', 'memory', 'name']);
    expect(await xs.readInt('/vm/1/memory')).toBe(512);
    await xs.rm('/vm/1/name');
    expect(await xs.exists('/vm/1/name')).toBe(false);
    expect(await xs.readOptional('/vm/1/name')).toBeUndefined();
    await xs.rm('/vm');
    expect(await xs.exists('/vm')).toBe(false);
  });

  it('keeps values as bytes', async () => {
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    await fx.client.write('/bin', bytes);
    expect([...(await fx.client.readBytes('/bin'))]).toEqual([...bytes]);
  });

  it('reads typed values and defaults', async () => {
    const xs = fx.client;
    await xs.write('/d/feature-persistent', '1');
    await xs.write('/d/sectors', '18446744073709551615');
    await xs.write('/d/junk', '12abc');
    expect(await xs.readBool('/d/feature-persistent')).toBe(true);
    expect(await xs.readBool('/d/feature-discard')).toBe(false);
    expect(await xs.readInt('/d/max-ring-page-order', { fallback: 0 })).toBe(0);
    expect(await xs.readBigInt('/d/sectors')).toBe(0xffffffffffffffffn);
    await expect(xs.readInt('/d/junk')).rejects.toMatchObject({ code: 'XS_EINVAL', path: '/d/junk' });
    await expect(xs.readInt('/d/absent')).rejects.toMatchObject({ code: 'XS_ENOENT' });
  });

  it('turns ERROR replies into typed errors', async () => {
    const err = await fx.client.read('/no/such/node').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(XenstoreError);
    expect(err).toMatchObject({ code: 'XS_ENOENT', errno: 'ENOENT', path: '/no/such/node' });
    await expect(fx.client.write('bad//path', 'x')).rejects.toMatchObject({ code: 'XS_EINVAL' });
    await expect(fx.client.rm('/no/such')).rejects.toMatchObject({ code: 'XS_ENOENT' });
    // The connection is still good afterwards.
    await fx.client.write('/ok', '1');
    expect(await fx.client.read('/ok')).toBe('1');
  });

  it('sends a 4096-byte payload and refuses 4097 without sending it', async () => {
    const path = '/big';
    const value = 'v'.repeat(XENSTORE_PAYLOAD_MAX - path.length - 1); // path \0 value = 4096
    await fx.client.write(path, value);
    expect((await fx.client.read(path)).length).toBe(value.length);
    const sent = fx.client.stats().requestsSent;
    await expect(fx.client.write(path, `${value}v`)).rejects.toMatchObject({ code: 'XS_E2BIG' });
    expect(fx.client.stats().requestsSent).toBe(sent);
    expect(await fx.client.read(path)).toBe(value);
  });

  it('lists a directory too large for one reply with DIRECTORY_PART', async () => {
    const names = Array.from({ length: 600 }, (_, i) => `child-with-a-long-name-${String(i).padStart(4, '0')}`);
    await Promise.all(names.map((n) => fx.client.write(`/many/${n}`, '')));
    expect(names.join('\0').length).toBeGreaterThan(3 * XENSTORE_PAYLOAD_MAX);
    const listed = await fx.client.directory('/many');
    expect(listed).toEqual(names);
  });

  it('keeps 500 requests in flight and matches every reply', async () => {
    const xs = fx.client;
    const n = 500;
    await Promise.all(Array.from({ length: n }, (_, i) => xs.write(`/conc/${i}`, `value-${i}`)));
    const values = await Promise.all(Array.from({ length: n }, (_, i) => xs.read(`/conc/${i}`)));
    values.forEach((v, i) => expect(v).toBe(`value-${i}`));
    const mixed = await Promise.all(Array.from({ length: n }, (_, i) => (i % 2 ? xs.read(`/conc/${i}`) : xs.exists(`/conc/none-${i}`))));
    mixed.forEach((v, i) => expect(v).toBe(i % 2 ? `value-${i}` : false));
    const s = xs.stats();
    expect(s.maxInFlight).toBeGreaterThanOrEqual(n);
    expect(s.inFlight).toBe(0);
    expect(s.unknownReplies).toBe(0);
  });

  it('enforces permissions for other domains', async () => {
    const xs = fx.client;
    // As a toolstack does: the home first, owned by the domain; what dom0 writes below inherits that.
    await xs.mkdir('/local/domain/5');
    await xs.setPerms('/local/domain/5', [{ perm: 'n', domid: 5 }]);
    await xs.write('/local/domain/5/device/vbd/768/state', '1');
    await xs.write('/secret', 'dom0 only');
    await xs.write('/shared', 'readable');
    await xs.setPerms('/shared', [
      { perm: 'n', domid: 0 },
      { perm: 'r', domid: 5 },
    ]);
    expect(await xs.getPerms('/shared')).toEqual([
      { perm: 'n', domid: 0 },
      { perm: 'r', domid: 5 },
    ]);

    const guest = await fx.connect(5);
    await expect(guest.read('/secret')).rejects.toMatchObject({ code: 'XS_EACCES' });
    expect(await guest.read('/shared')).toBe('readable');
    await expect(guest.write('/shared', 'x')).rejects.toMatchObject({ code: 'XS_EACCES' });
    // Relative paths resolve to the domain's home, which it owns.
    expect(await guest.read('device/vbd/768/state')).toBe('1');
    await guest.write('data/result', 'ok');
    expect(await xs.read('/local/domain/5/data/result')).toBe('ok');
    // A domain may share what it owns but not give it away.
    await expect(guest.setPerms('data/result', [{ perm: 'n', domid: 7 }])).rejects.toMatchObject({ code: 'XS_EPERM' });
    await guest.setPerms('data/result', [
      { perm: 'n', domid: 5 },
      { perm: 'b', domid: 7 },
    ]);
  });

  it('isolates a transaction until commit', async () => {
    const xs = fx.client;
    await xs.write('/t/a', 'before');
    const tx = await xs.startTransaction();
    await tx.write('/t/a', 'inside');
    await tx.write('/t/new', 'x');
    expect(await tx.read('/t/a')).toBe('inside');
    expect(await xs.read('/t/a')).toBe('before');
    expect(await xs.exists('/t/new')).toBe(false);
    await tx.end(true);
    expect(await xs.read('/t/a')).toBe('inside');
    expect(await xs.read('/t/new')).toBe('x');
  });

  it('retries conflicting transactions until all commit', async () => {
    const xs = fx.client;
    const other = await fx.connect();
    await xs.write('/counter', '0');
    const bump = (c: typeof xs) =>
      c.transaction(
        async (tx) => {
          const v = await tx.readInt('/counter');
          // Give the other connection time to interleave.
          await new Promise((r) => setTimeout(r, 1));
          await tx.write('/counter', String(v + 1));
        },
        { maxAttempts: 200 },
      );
    const rounds = 15;
    for (let i = 0; i < rounds; i++) await Promise.all([bump(xs), bump(other), bump(xs), bump(other)]);
    expect(await xs.readInt('/counter')).toBe(4 * rounds);
    expect(fx.xenstored.stats().transactionConflicts).toBeGreaterThan(0);
  });

  it('reports the per-connection transaction quota as XS_ENOSPC', async () => {
    const open = await Promise.all(Array.from({ length: 10 }, () => fx.client.startTransaction()));
    await expect(fx.client.startTransaction()).rejects.toMatchObject({ code: 'XS_ENOSPC' });
    await Promise.all(open.map((t) => t.end(false)));
    await (await fx.client.startTransaction()).end(false);
  });

  it('aborts a transaction whose function throws', async () => {
    await expect(
      fx.client.transaction(async (tx) => {
        await tx.write('/aborted', 'x');
        throw new Error('changed my mind');
      }),
    ).rejects.toThrow('changed my mind');
    expect(await fx.client.exists('/aborted')).toBe(false);
  });

  it('gives up on a transaction that always conflicts, with XS_EAGAIN', async () => {
    const xs = fx.client;
    const other = await fx.connect();
    await xs.write('/hot', '0');
    let attempts = 0;
    const err = await xs
      .transaction(
        async (tx) => {
          attempts++;
          await tx.read('/hot');
          await other.write('/hot', String(attempts)); // someone always gets there first
          await tx.write('/hot', 'mine');
        },
        { maxAttempts: 3 },
      )
      .catch((e: unknown) => e);
    expect(isXenError(err, 'XS_EAGAIN')).toBe(true);
    expect(attempts).toBe(3);
  });

  it('rejects everything pending, and later requests, when closed', async () => {
    const xs = await fx.connect();
    const pending = Array.from({ length: 50 }, (_, i) => xs.read(`/nothing/${i}`));
    xs.close();
    const results = await Promise.allSettled(pending);
    expect(results.every((r) => r.status === 'rejected' && (r.reason as XenstoreError).code === 'XS_CLOSED')).toBe(true);
    await expect(xs.read('/x')).rejects.toMatchObject({ code: 'XS_CLOSED' });
    expect((await xs.closed).code).toBe('XS_CLOSED');
  });
});
