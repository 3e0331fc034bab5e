import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { FsError, mountExt } from '../../src/index.js';
import { MemoryTarget, blankImage, makeTree, mkfsExt4, run, scratch } from '../helpers/images.js';
import { fuzz } from '../helpers/fuzz.js';

describe('fuzz: ext2/3/4 on damaged images', () => {
  const tmp = scratch();
  const img = join(tmp.dir, 'disk.img');
  beforeAll(() => {
    const dir = join(tmp.dir, 'tree');
    run('mkdir', ['-p', dir]);
    makeTree(dir, 200_001);
    blankImage(img, 16 << 20);
    mkfsExt4(img, dir);
  });
  afterAll(() => tmp.remove());

  it('metadata damaged at random: mount, read every entry, write, unmount all end in success or a typed FsError', async () => {
    const f = fuzz('ext damaged');
    const base = readFileSync(img);
    for (const _ of f.cases(60, 20_000)) {
      const t = new MemoryTarget(new Uint8Array(base));
      // 1–32 bytes anywhere in the first 512 KiB: superblock, group descriptors, bitmaps, inode tables, directories.
      for (let k = 0, n = 1 + f.int(32); k < n; k++) t.bytes[1024 + f.int(511 * 1024)] = f.int(256);
      try {
        const fs = await mountExt(t);
        try {
          for (const name of await fs.readdir('/')) {
            await fs.readFile(`/${name}`).catch((err: unknown) => {
              expect(err).toBeInstanceOf(FsError);
            });
          }
          await fs.writeFile('/written', 'after the damage');
          f.tally.add('mounted, read and written');
        } finally {
          await fs.unmount().catch((err: unknown) => {
            expect(err).toBeInstanceOf(FsError);
          });
        }
      } catch (err) {
        expect(err).toBeInstanceOf(FsError);
        f.tally.add((err as FsError).code);
      }
    }
    f.report('damaged images', 'mounted, read and written');
  }, 60_000);

  it('two mounts used at once (one WebAssembly instance under both): every read right on both', async () => {
    const a = MemoryTarget.fromFile(img);
    const b = MemoryTarget.fromFile(img);
    const fa = await mountExt(a);
    const fb = await mountExt(b, { readahead: 0 });
    try {
      const want = await fa.readFile('/large.bin');
      expect(want.length).toBe(200_001);
      const results = await Promise.all(Array.from({ length: 8 }, (_, i) => (i % 2 === 0 ? fa : fb).readFile('/large.bin')));
      for (const r of results) expect(Buffer.compare(r, want)).toBe(0);
      await Promise.all([fa.writeFile('/only-a', 'a'), fb.writeFile('/only-b', 'b'), fa.mkdir('/dir-a'), fb.mkdir('/dir-b')]);
      expect((await fa.readdir('/')).filter((n) => n.startsWith('only') || n.startsWith('dir-'))).toEqual(['only-a', 'dir-a']);
      expect((await fb.readdir('/')).filter((n) => n.startsWith('only') || n.startsWith('dir-'))).toEqual(['only-b', 'dir-b']);
    } finally {
      await fa.unmount();
      await fb.unmount();
    }
  });
});
