/**
 * Save/restore on a real Xen, the mechanism under live migration: dom0 runs
 * `xl save` then `xl restore` while the driver has writes in flight. The
 * process is frozen and comes back in a domain with another id, an empty
 * grant table and its event-channel ports gone (unbinding one of those
 * would crash this kernel). The device must resume on its own, replay what
 * was in flight, and lose no acknowledged write; the kernel's xen-blkfront
 * on xvdd goes through the same restore as the control.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BlkifError, openBlockDevice } from '../../src/index.js';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { BLKBENCH, MiB, XVDB, askDom0Within, platform } from './env.js';

/** The control: the kernel's xen-blkfront on xvdd (bound by the bench test), through dd with O_DIRECT. */
function kernelIo(kind: 'write' | 'read', data: Buffer | number, atMiB: number): Buffer {
  const file = '/tmp/restore-control.bin';
  if (kind === 'write') writeFileSync(file, data as Buffer);
  const args =
    kind === 'write'
      ? [`if=${file}`, 'of=/dev/xvdd', 'oflag=direct', 'bs=1M', `seek=${atMiB}`, `count=${(data as Buffer).length / MiB}`]
      : ['if=/dev/xvdd', `of=${file}`, 'iflag=direct', 'bs=1M', `skip=${atMiB}`, `count=${(data as number) / MiB}`];
  const r = spawnSync('dd', args, { encoding: 'utf8' });
  assert.equal(r.status, 0, `dd ${kind}: ${r.stderr}`);
  return kind === 'read' ? readFileSync(file) : Buffer.alloc(0);
}

/** Deterministic bytes for block `b` of generation `g`. */
function block(b: number, g: number, size: number): Buffer {
  const out = Buffer.alloc(size);
  for (let i = 0; i < size; i += 8) {
    out.writeUInt32LE((b * 0x9e3779b1 + i) >>> 0, i);
    out.writeUInt32LE(g >>> 0, i + 4);
  }
  return out;
}

test(
  'restore: xl save and xl restore with writes in flight: the device resumes, no acknowledged write lost',
  { timeout: 420_000 },
  async () => {
    const p = await platform();
    const dev = await openBlockDevice({ platform: p, vdev: XVDB, queues: 2, ringPages: 4, reconnectTimeoutMs: 120_000, timeoutMs: 60_000 });
    try {
      const base = 16 * MiB;
      const size = 16384;
      const blocks = 256;
      const model = new Array<number>(blocks).fill(0);
      let acked = 0;
      let mismatches = 0;
      let gen = 0;
      let stop = false;
      const failures: string[] = [];
      const writers = Array.from({ length: 8 }, async (_, w) => {
        for (let k = 0; !stop; k++) {
          const b = w + 8 * (k % (blocks / 8)); // each writer owns its blocks: one write per block at a time
          const g = ++gen;
          try {
            await dev.write(base + b * size, block(b, g, size));
            model[b] = g;
            acked++;
            const back = Buffer.from(await dev.read(base + b * size, size));
            if (!back.equals(block(b, g, size))) mismatches++;
          } catch (e) {
            failures.push(e instanceof BlkifError ? e.code : String(e));
            return;
          }
        }
      });
      const control = existsSync('/dev/xvdd');
      const before1 = block(7, 1, 4 * MiB);
      if (control) kernelIo('write', before1, 8);
      while (acked < 100) await new Promise((r) => setTimeout(r, 20));
      const resumed = new Promise<{ replayed: number; domid: number; downtimeMs: number }>((r) => dev.once('resume', r));
      const before = { acked, domid: p.domid };
      const t0 = Date.now();
      const answer = await askDom0Within(300_000, p.xenstore, 'saverestore');
      assert.match(answer, /^restored \d+$/, `dom0: ${answer}`);
      let timer: NodeJS.Timeout | undefined;
      const r = await Promise.race([
        resumed,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error('no resume 120 s after the restore')), 120_000);
        }),
      ]).finally(() => clearTimeout(timer));
      const frozen = Date.now() - t0;
      if (control) {
        // The kernel's own driver came through the same restore.
        assert.ok(kernelIo('read', 4 * MiB, 8).equals(before1), "the kernel's xen-blkfront reads what it wrote before the save");
        const after1 = block(9, 2, 4 * MiB);
        kernelIo('write', after1, 12);
        assert.ok(kernelIo('read', 4 * MiB, 12).equals(after1), "the kernel's xen-blkfront writes and reads after the restore");
      }
      const at = acked;
      while (acked < at + 100 && failures.length === 0) await new Promise((res) => setTimeout(res, 20));
      stop = true;
      await Promise.all(writers);
      for (let b = 0; b < blocks; b++) {
        if (model[b] === 0) continue;
        if (!Buffer.from(await dev.read(base + b * size, size)).equals(block(b, model[b]!, size))) mismatches++;
      }
      console.log(
        `# restore: domain ${before.domid} -> ${r.domid} (dom0: ${answer}); ${acked} writes acknowledged ` +
          `(${before.acked} before the save), ${mismatches} mismatches, ${r.replayed} pieces replayed, ` +
          `${frozen} ms from the request to the answer, ${r.downtimeMs} ms from noticing the restore to connected; ` +
          `kernel xen-blkfront control ${control ? 'read and wrote across it' : 'not bound'}; failures ${JSON.stringify(failures)}`,
      );
      assert.deepEqual(failures, []);
      assert.equal(mismatches, 0);
      assert.equal(r.domid, p.domid);
      assert.notEqual(r.domid, before.domid, 'xl restore gives the domain a new id');
      assert.equal(dev.stats().resumes, 1);
    } finally {
      await dev.close();
      await p.close();
    }
  },
);

test('restore: blkbench --verify across xl save -D (the domain keeps its id): exit 0, no mismatch', { timeout: 420_000 }, async () => {
  const p = await platform();
  try {
    const child = spawn(
      process.execPath,
      [
        BLKBENCH,
        '--xen',
        '--vdev',
        String(XVDB),
        '--rw',
        'randrw',
        '--bs',
        '16k',
        '--iodepth',
        '8',
        '--offset',
        '32m',
        '--size',
        '8m',
        '--runtime',
        '60',
        '--verify',
        '--json',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', resolve));
    await new Promise((r) => setTimeout(r, 10_000)); // blkbench is up, the region laid out, I/O running
    const domid = p.domid;
    const answer = await askDom0Within(300_000, p.xenstore, 'saverestore', 'keep');
    assert.equal(answer, `restored ${domid}`, `dom0: ${answer}`);
    const code = await exited;
    assert.equal(code, 0, `blkbench exited ${code}: ${err}`);
    const r = JSON.parse(out) as { ios: number; verify_mismatches: number | null; verify_checked: number };
    console.log(
      `# restore keeping the domid (xl save -D): domain ${domid}; blkbench --verify ran across it: ${r.ios} I/Os, ` +
        `${r.verify_mismatches} mismatched blocks of ${r.verify_checked} checked`,
    );
    assert.equal(r.verify_mismatches, 0);
    assert.ok(r.ios > 0);
  } finally {
    await p.close();
  }
});
