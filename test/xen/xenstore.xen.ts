/**
 * The xenbus client against the real C xenstored, through the domU kernel's
 * /dev/xen/xenbus: the same client the simulated xenstored is tested with.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { XenstoreError, type XenPlatform } from '../../src/index.js';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { platform, report } from './env.js';

async function withPlatform(fn: (p: XenPlatform) => Promise<void>): Promise<void> {
  const p = await platform();
  try {
    await fn(p);
  } finally {
    await p.xenstore.rm('data/xs').catch(() => undefined);
    await p.close();
  }
}

function code(err: unknown): string {
  return err instanceof XenstoreError ? err.code : `not a XenstoreError: ${String(err)}`;
}

test('xenstore: reads, writes, directory, rm, relative and absolute paths', () =>
  withPlatform(async ({ xenstore: xs, domid }) => {
    assert.equal(await xs.read('domid'), String(domid));
    assert.equal(await xs.read(`/local/domain/${domid}/domid`), String(domid));
    assert.equal(await xs.read('name'), 'suite');
    await xs.write('data/xs/a', 'one');
    await xs.write('data/xs/b', new Uint8Array([0, 1, 2, 255]));
    await xs.mkdir('data/xs/dir');
    assert.equal(await xs.read('data/xs/a'), 'one');
    assert.deepEqual([...(await xs.readBytes('data/xs/b'))], [0, 1, 2, 255]);
    assert.deepEqual((await xs.directory('data/xs')).sort(), ['a', 'b', 'dir']);
    // The device's buffer holds 4096 bytes with the header: a full
    // XENSTORE_PAYLOAD_MAX frame is refused before it is sent (XS_E2BIG). The
    // largest that fits reaches xenstored, which caps a guest's node at 2048
    // bytes (its entry-size quota): XS_ENOSPC. The connection carries on.
    const big = 'x'.repeat(4096 - 'data/xs/big'.length - 1);
    await assert.rejects(xs.write('data/xs/big', big), (e) => code(e) === 'XS_E2BIG');
    await assert.rejects(xs.write('data/xs/big', big.slice(16)), (e) => code(e) === 'XS_ENOSPC');
    await xs.write('data/xs/big', big.slice(0, 1900));
    assert.equal(await xs.read('data/xs/big'), big.slice(0, 1900));
    await xs.rm('data/xs/a');
    assert.equal(await xs.readOptional('data/xs/a'), undefined);
    await assert.rejects(xs.read('data/xs/a'), (e) => code(e) === 'XS_ENOENT');
    await assert.rejects(xs.read('data/xs/nope/deeper'), (e) => code(e) === 'XS_ENOENT');
  }));

test('xenstore: permission errors from the real xenstored', () =>
  withPlatform(async ({ xenstore: xs, domid }) => {
    // dom0's own nodes and the root are not ours to read or write.
    await assert.rejects(xs.read('/local/domain/0/domid'), (e) => code(e) === 'XS_EACCES');
    await assert.rejects(xs.write('/tool/xen-blkfront-suite', 'x'), (e) => code(e) === 'XS_EACCES');
    await assert.rejects(xs.write('/local/domain/0/data/x', 'x'), (e) => code(e) === 'XS_EACCES');
    // Our own node is ours, and we may give it away read-only.
    await xs.write('data/xs/perm', 'v');
    const perms = await xs.getPerms('data/xs/perm');
    assert.equal(perms[0]?.domid, domid);
    await xs.setPerms('data/xs/perm', [
      { domid, perm: 'n' },
      { domid: 0, perm: 'r' },
    ]);
    assert.deepEqual(
      (await xs.getPerms('data/xs/perm')).map((p) => `${p.perm}${p.domid}`),
      [`n${domid}`, 'r0'],
    );
    // Once owned by dom0, it is no longer ours to change.
    await xs.setPerms('data/xs/perm', [{ domid: 0, perm: 'r' }]).catch(() => undefined);
    const after = await xs.getPerms('data/xs/perm').catch((e: unknown) => e);
    if (Array.isArray(after)) {
      assert.equal(after[0]?.domid, domid, 'a guest cannot hand its node to dom0');
    } else {
      assert.equal(code(after), 'XS_EACCES');
    }
  }));

test('xenstore: a transaction that conflicts fails with XS_EAGAIN, and transaction() retries it', () =>
  withPlatform(async ({ xenstore: xs }) => {
    await xs.write('data/xs/counter', '0');
    const tx = await xs.startTransaction();
    assert.equal(await tx.read('data/xs/counter'), '0');
    await xs.write('data/xs/counter', '10'); // outside, after the snapshot
    await tx.write('data/xs/counter', '1');
    await assert.rejects(tx.end(true), (e) => code(e) === 'XS_EAGAIN');
    assert.equal(await xs.read('data/xs/counter'), '10', 'the conflicting commit changed nothing');

    // 8 concurrent increments, each a transaction: all land, some retried.
    let attempts = 0;
    await Promise.all(
      Array.from({ length: 8 }, () =>
        xs.transaction(
          async (t) => {
            attempts++;
            const v = Number(await t.read('data/xs/counter'));
            await new Promise((r) => setTimeout(r, 5));
            await t.write('data/xs/counter', String(v + 1));
          },
          { maxAttempts: 64 },
        ),
      ),
    );
    assert.equal(await xs.read('data/xs/counter'), '18');
    assert.ok(attempts > 8, `conflicting transactions were retried (${attempts} attempts)`);

    // A discarded transaction leaves nothing behind.
    const gone = await xs.startTransaction();
    await gone.write('data/xs/never', 'x');
    await gone.end(false);
    assert.equal(await xs.readOptional('data/xs/never'), undefined);
  }));

test('xenstore: watches fire on registration, on writes below, and on rm', () =>
  withPlatform(async ({ xenstore: xs }) => {
    const seen: string[] = [];
    let wake: () => void = () => undefined;
    const watch = await xs.watch('data/xs/w', (ev) => {
      seen.push(ev.path);
      wake();
    });
    const until = async (pred: () => boolean, what: string): Promise<void> => {
      const deadline = Date.now() + 10_000;
      while (!pred()) {
        if (Date.now() > deadline) assert.fail(`no watch event for ${what}; saw ${JSON.stringify(seen)}`);
        await new Promise<void>((r) => {
          wake = r;
          setTimeout(r, 200);
        });
      }
    };
    await until(() => seen.includes('data/xs/w'), 'registration');
    await xs.write('data/xs/w/child', '1');
    await until(() => seen.includes('data/xs/w/child'), 'a write below');
    await xs.rm('data/xs/w');
    await until(() => seen.filter((p) => p === 'data/xs/w').length >= 2 || seen.filter((p) => p === 'data/xs/w/child').length >= 2, 'rm');
    await watch.unwatch();
    const count = seen.length;
    await xs.write('data/xs/w', 'after');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(seen.length, count, 'no events after unwatch');

    // A stalled callback in one group does not hold up another group's events.
    let release: () => void = () => undefined;
    const stalled = new Promise<void>((r) => {
      release = r;
    });
    let fast = 0;
    const slow = await xs.watch('data/xs/slow', () => stalled, { group: 'slow' });
    const quick = await xs.watch(
      'data/xs/fast',
      () => {
        fast++;
      },
      { group: 'fast' },
    );
    for (let i = 0; i < 5; i++) await xs.write('data/xs/fast', String(i));
    await until(() => fast >= 6, 'the fast group while the slow one is stalled');
    release();
    await slow.unwatch();
    await quick.unwatch();
  }));

test('xenstore: 200 requests in flight on one connection, each matched to its reply', () =>
  withPlatform(async ({ xenstore: xs }) => {
    const n = 200;
    await Promise.all(Array.from({ length: n / 2 }, (_, i) => xs.write(`data/xs/m/${i}`, `value-${i}`)));
    const [values, listing] = await Promise.all([
      Promise.all(Array.from({ length: n / 2 }, (_, i) => xs.read(`data/xs/m/${i}`))),
      xs.directory('data/xs/m'),
    ]);
    values.forEach((v, i) => assert.equal(v, `value-${i}`));
    assert.equal(listing.length, n / 2);
    const stats = xs.stats();
    assert.ok(stats.maxInFlight >= 50, `many requests were in flight at once (max ${stats.maxInFlight})`);
    assert.equal(stats.unknownReplies, 0);
    console.log(`# xenstore: ${stats.requestsSent} requests, at most ${stats.maxInFlight} in flight`);
  }));

test('xenstore: one request at a time against 64 in flight, through 1 and 8 files of /dev/xen/xenbus', { timeout: 300_000 }, () => {
  const bench = fileURLToPath(new URL('../../bench/xenstore.js', import.meta.url));
  for (const files of [1, 8]) {
    const r = spawnSync(
      process.execPath,
      [bench, '--xenbus', '/dev/xen/xenbus', '--files', String(files), '--base', 'data/xsbench', '--ops', '300', '--in-flight', '64'],
      { encoding: 'utf8', timeout: 120_000 },
    );
    assert.equal(r.status, 0, `bench/xenstore.js: ${r.stderr}`);
    const out = JSON.parse(r.stdout) as {
      cases: Record<string, { serial_ops_per_s: number; concurrent_ops_per_s: number; ratio: number }>;
    };
    const line = Object.entries(out.cases)
      .map(([name, c]) => `${name} ${c.serial_ops_per_s} -> ${c.concurrent_ops_per_s} ops/s, ratio ${c.ratio.toFixed(2)}`)
      .join('; ');
    report(`xenstore through /dev/xen/xenbus, C xenstored, ${files} file${files === 1 ? '' : 's'}: ${line}`);
    for (const c of Object.values(out.cases)) assert.ok(c.serial_ops_per_s > 0 && c.concurrent_ops_per_s > 0);
  }
});
