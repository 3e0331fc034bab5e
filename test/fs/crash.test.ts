/**
 * Crash safety of the files layer: a child process mounts an ext4 image
 * (made by mkfs.ext4 -d) through the driver on its own simulated host and
 * writes files, syncing most of them and saying so on stdout the moment
 * each sync resolves; it is killed with SIGKILL at many points (before the
 * mount finished, between syncs, in the middle of a write or a sync). Then:
 * the image must say "not clean" (so e2fsck and the kernel check it),
 * e2fsck -fy must leave a file system a second e2fsck -fn finds whole, and
 * every file whose sync resolved must read back by hash through debugfs
 * and through the driver.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { copyFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { mountExt } from '../../src/index.js';
import { blankImage, debugfsCat, dumpe2fs, e2fsck, mkfsExt4, run, scratch, sha } from '../helpers/images.js';
import { diskFixture, pattern, rng } from '../helpers/blk.js';

const DIST = pathToFileURL(resolve('dist/src')).href;

/**
 * The writer: files /d<i%3>/f<i> of 1 byte to 300 KiB, each written once;
 * two in three with { sync: true }, then "synced <path> <sha256>" on stdout.
 */
const CHILD = `
import { createHash } from 'node:crypto';
const { createSimHost } = await import('${DIST}/sim/index.js');
const { openBlockDevice, mountExt } = await import('${DIST}/index.js');
const [img, seedArg] = process.argv.slice(2);
let s = Number(seedArg) >>> 0 || 1;
const next = () => { s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0; return s; };
const host = await createSimHost();
const disk = await host.addDisk({ image: img });
const dev = await openBlockDevice({ platform: host.guest, vdev: disk.vdev });
const fs = await mountExt(dev);
for (const d of ['/d0', '/d1', '/d2']) await fs.mkdir(d, { recursive: true });
process.stdout.write('mounted\\n');
for (let i = 0; ; i++) {
  const len = 1 + (next() % 300_000);
  const data = Buffer.alloc(len);
  for (let k = 0; k + 4 <= len; k += 4) data.writeUInt32LE(next(), k);
  for (let k = len & ~3; k < len; k++) data[k] = next() & 255;
  const path = '/d' + (i % 3) + '/f' + i;
  const sync = i % 3 !== 2;
  await fs.writeFile(path, data, { sync });
  if (sync) process.stdout.write('synced ' + path + ' ' + createHash('sha256').update(data).digest('hex') + '\\n');
}
`;

interface KillResult {
  /** Files whose sync resolved before the kill: path → sha256. */
  synced: Map<string, string>;
  mounted: boolean;
}

/**
 * Runs the writer on `img` and kills it with SIGKILL `delayMs` after its
 * `afterSyncs`-th sync; for 0, after it said it mounted; for -1, after it started.
 */
function writeAndKill(script: string, img: string, seed: number, afterSyncs: number, delayMs: number): Promise<KillResult> {
  return new Promise((done, fail) => {
    // A file, not -e: the backend's worker threads inherit the parent's exec arguments.
    const child = spawn(process.execPath, [script, img, String(seed)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const synced = new Map<string, string>();
    let mounted = false;
    let buffered = '';
    let stderr = '';
    let armed = false;
    const arm = (): void => {
      if (armed) return;
      armed = true;
      setTimeout(() => child.kill('SIGKILL'), delayMs);
    };
    if (afterSyncs < 0) arm();
    child.stdout.on('data', (c: Buffer) => {
      buffered += c.toString();
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        if (line === 'mounted') {
          mounted = true;
          if (afterSyncs === 0) arm();
        }
        const m = /^synced (\S+) ([0-9a-f]{64})$/.exec(line);
        if (m) {
          synced.set(m[1]!, m[2]!);
          if (synced.size === afterSyncs) arm();
        }
      }
    });
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') fail(new Error(`the writer ended by itself (${code}, ${signal}): ${stderr}`));
      else done({ synced, mounted });
    });
  });
}

describe('crash safety: SIGKILL while writing and syncing files', () => {
  it('every file whose sync resolved survives e2fsck -fy, by hash through debugfs and the driver, at every kill point', async () => {
    const tmp = scratch();
    try {
      const tree = join(tmp.dir, 'tree');
      run('mkdir', ['-p', tree]);
      writeFileSync(join(tree, 'existing.bin'), pattern(0, 200_000, 3));
      const script = join(tmp.dir, 'writer.mjs');
      writeFileSync(script, CHILD);
      const base = join(tmp.dir, 'base.img');
      blankImage(base, 32 << 20);
      mkfsExt4(base, tree);
      const next = rng(2026);
      // Kill points: while starting (the host, the handshake, the mount), right after the mount, then after 1..14 syncs,
      // each a random 0-40 ms later (in the next write, or in the middle of a sync).
      const points = [
        { after: -1, delay: 40 + (next() % 80) },
        { after: -1, delay: 130 + (next() % 100) },
        { after: -1, delay: 230 + (next() % 60) },
        ...[0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14].map((after) => ({ after, delay: next() % 41 })),
      ];
      const report: string[] = [];
      let repaired = 0;
      let checked = 0;
      for (const [k, p] of points.entries()) {
        const img = join(tmp.dir, `crash${k}.img`);
        copyFileSync(base, img);
        const r = await writeAndKill(script, img, 100 + k, p.after, p.delay);
        const st = dumpe2fs(img)['Filesystem state'];
        // Mounted read-write when killed: the disk must say so, so that e2fsck (and the kernel) check it.
        if (r.mounted) expect(st, `kill point ${k}`).toBe('not clean');
        const fixed = e2fsck(img, 0, '-fy').status;
        expect(fixed, `kill point ${k}: e2fsck -fy`).toBeLessThanOrEqual(2);
        if (fixed > 0) repaired++;
        expect(e2fsck(img).status, `kill point ${k}: e2fsck -fn after the repair`).toBe(0);
        for (const [path, hash] of r.synced) expect(sha(debugfsCat(img, path)), `kill point ${k}: debugfs ${path}`).toBe(hash);
        expect(sha(debugfsCat(img, '/existing.bin'))).toBe(sha(pattern(0, 200_000, 3)));
        const fx = await diskFixture({ image: img });
        try {
          const fs = await mountExt(fx.dev, { readOnly: true });
          for (const [path, hash] of r.synced) expect(sha(await fs.readFile(path)), `kill point ${k}: driver ${path}`).toBe(hash);
          await fs.unmount();
        } finally {
          await fx.close();
        }
        checked += r.synced.size;
        report.push(`${p.after}+${p.delay}ms: ${r.synced.size} synced, ${st}, e2fsck ${fixed}`);
      }
      console.log(
        `crash: ${points.length} kill points (syncs before the kill + delay: state after, e2fsck -fy status); ` +
          `${checked} synced files checked, ${repaired} repairs: ${report.join('; ')}`,
      );
      expect(checked).toBeGreaterThanOrEqual(40);
    } finally {
      tmp.remove();
    }
  }, 240_000);
});
