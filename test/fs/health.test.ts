/**
 * The superblock's health record, kept as fuse2fs keeps it, on images made
 * by mkfs.ext4 -d and judged by dumpe2fs, debugfs and e2fsck: a read-write
 * mount marks the file system not clean until a clean unmount; a journal
 * needing recovery or recorded errors refuse a write mount (FS_EDIRTY);
 * sync() leaves a copy of the disk that e2fsck finds whole, with every
 * file synced; the superblock's crc32c as e2fsprogs computes it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { copyFileSync, readFileSync, writeFileSync } from 'node:fs';
import { mountExt } from '../../src/index.js';
import { crc32c } from '../../src/wire/crc32c.js';
import { sealSuperblock, superblockSealed } from '../../src/fs/health.js';
import { blankImage, debugfsCat, dumpe2fs, e2fsck, mkfsExt4, run, scratch, sha } from '../helpers/images.js';
import { diskFixture, pattern } from '../helpers/blk.js';

describe('the health record in the superblock', () => {
  const tmp = scratch();
  const tree = join(tmp.dir, 'tree');
  let n = 0;
  /** A fresh 16 MiB ext4 image (journal, metadata_csum: Debian's defaults) with two files. */
  const image = (): string => {
    const img = join(tmp.dir, `fs${++n}.img`);
    blankImage(img, 16 << 20);
    mkfsExt4(img, tree);
    return img;
  };
  beforeAll(() => {
    run('mkdir', ['-p', tree]);
    writeFileSync(join(tree, 'a.txt'), 'hello\n');
    writeFileSync(join(tree, 'b.bin'), pattern(0, 300_000, 7));
  });
  afterAll(() => tmp.remove());

  it("computes the superblock's crc32c as e2fsprogs does, and reseals it after a change", () => {
    // The check value of CRC-32C (RFC 3720): "123456789" → 0xE3069283 with the standard inversions.
    expect((crc32c(0xffffffff, new TextEncoder().encode('123456789')) ^ 0xffffffff) >>> 0).toBe(0xe3069283);
    const sb = new DataView(new Uint8Array(readFileSync(image()).subarray(1024, 2048)).buffer);
    expect(sb.getUint16(0x38, true)).toBe(0xef53);
    expect(sb.getUint32(0x64, true) & 0x400).toBe(0x400); // metadata_csum, as mkfs.ext4 makes it here
    expect(superblockSealed(sb)).toBe(true);
    sb.setUint16(0x34, 99, true);
    expect(superblockSealed(sb)).toBe(false);
    sealSuperblock(sb);
    expect(superblockSealed(sb)).toBe(true);
  });

  it('a read-write mount is "not clean" on the disk until a clean unmount, which leaves e2fsck nothing to say', async () => {
    const img = image();
    const fx = await diskFixture({ image: img });
    try {
      const fs = await mountExt(fx.dev);
      expect(fs.warnings).toEqual([]);
      // Already on the disk before the first change: a crash from here on is checked.
      expect(dumpe2fs(img)['Filesystem state']).toBe('not clean');
      expect(dumpe2fs(img)['Mount count']).toBe('1');
      await fs.writeFile('/new.txt', 'new\n');
      await fs.unmount();
      const sb = dumpe2fs(img);
      expect(sb['Filesystem state']).toBe('clean');
      expect(sb['Mount count']).toBe('1');
      expect(Date.parse(sb['Last mount time']!)).toBeGreaterThan(Date.now() - 600_000);
      // A read-only mount writes nothing, and counts no mount.
      const ro = await mountExt(fx.dev, { readOnly: true });
      expect(dumpe2fs(img)['Filesystem state']).toBe('clean');
      await ro.unmount();
      expect(dumpe2fs(img)['Mount count']).toBe('1');
    } finally {
      await fx.close();
    }
    const f = e2fsck(img);
    expect(f.status, f.output).toBe(0);
    expect(debugfsCat(img, '/new.txt').toString()).toBe('new\n');
  });

  it('a journal that needs recovery: FS_EDIRTY read-write, naming e2fsck; read-only with a warning', async () => {
    const img = image();
    run('debugfs', ['-w', '-R', 'feature needs_recovery', img]);
    const before = sha(readFileSync(img));
    const fx = await diskFixture({ image: img });
    try {
      await expect(mountExt(fx.dev)).rejects.toMatchObject({
        code: 'FS_EDIRTY',
        message: expect.stringMatching(/journal needs recovery.*e2fsck -fy/) as unknown,
      });
      const fs = await mountExt(fx.dev, { readOnly: true });
      expect(fs.warnings.join('\n')).toMatch(/journal needs recovery/);
      expect((await fs.readFile('/a.txt')).toString()).toBe('hello\n');
      await expect(fs.writeFile('/x', 'x')).rejects.toMatchObject({ code: 'FS_EROFS' });
      // { force } does not open a journal that needs recovery.
      await expect(mountExt(fx.dev, { force: true })).rejects.toMatchObject({ code: 'FS_EDIRTY' });
      await fs.unmount();
    } finally {
      await fx.close();
    }
    expect(sha(readFileSync(img))).toBe(before); // nothing written
  });

  it('errors recorded: FS_EDIRTY read-write unless forced; forced, they stay recorded', async () => {
    const img = image();
    run('debugfs', ['-w', '-R', 'ssv state 3', img]); // EXT2_VALID_FS | EXT2_ERROR_FS
    const fx = await diskFixture({ image: img });
    try {
      await expect(mountExt(fx.dev)).rejects.toMatchObject({ code: 'FS_EDIRTY', message: expect.stringContaining('force') as unknown });
      const ro = await mountExt(fx.dev, { readOnly: true });
      expect(ro.warnings.join('\n')).toMatch(/errors are recorded/);
      await ro.unmount();
      const fs = await mountExt(fx.dev, { force: true });
      expect(fs.warnings.join('\n')).toMatch(/errors are recorded/);
      await fs.writeFile('/forced.txt', 'forced\n');
      await fs.unmount();
    } finally {
      await fx.close();
    }
    expect(dumpe2fs(img)['Filesystem state']).toMatch(/with errors/);
    expect(debugfsCat(img, '/forced.txt').toString()).toBe('forced\n');
  });

  it('an unclean file system mounts with a warning and stays unclean after a clean unmount', async () => {
    const img = image();
    run('debugfs', ['-w', '-R', 'ssv state 0', img]);
    const fx = await diskFixture({ image: img });
    try {
      const fs = await mountExt(fx.dev);
      expect(fs.warnings.join('\n')).toMatch(/not unmounted cleanly/);
      await fs.unmount();
    } finally {
      await fx.close();
    }
    expect(dumpe2fs(img)['Filesystem state']).toBe('not clean');
  });

  it('sync(): a copy of the disk taken right after it is whole for e2fsck, with every synced file; open streams carry on', async () => {
    const img = image();
    const fx = await diskFixture({ image: img });
    const copy = join(tmp.dir, 'synced.img');
    const files = new Map<string, Buffer>();
    try {
      const fs = await mountExt(fx.dev);
      // A write stream and a read stream stay open across the syncs.
      const ws = fs.createWriteStream('/streamed.bin');
      const first = Buffer.from(pattern(0, 100_000, 1));
      await new Promise<void>((res, rej) => ws.write(first, (e) => (e ? rej(e) : res())));
      const rs = fs.createReadStream('/b.bin', { chunkSize: 65536 });
      const it = rs[Symbol.asyncIterator]();
      const head = (await it.next()).value as Buffer;
      for (let i = 0; i < 12; i++) {
        const data = Buffer.from(pattern(i * 4096, 20_000 + i * 7_000, i + 2));
        files.set(`/f${i}`, data);
        await fs.writeFile(`/f${i}`, data, { sync: i % 4 === 3 });
      }
      await fs.rename('/f0', '/g0');
      files.set('/g0', files.get('/f0')!);
      files.delete('/f0');
      await fs.sync();
      copyFileSync(img, copy);
      // The streams go on after the syncs, where they were.
      const second = Buffer.from(pattern(100_000, 50_000, 9));
      await new Promise<void>((res, rej) => ws.end(second, (e?: Error | null) => (e ? rej(e) : res())));
      const rest: Buffer[] = [head];
      for (let r = await it.next(); r.done !== true; r = await it.next()) rest.push(r.value as Buffer);
      expect(sha(Buffer.concat(rest))).toBe(sha(pattern(0, 300_000, 7)));
      expect(sha(await fs.readFile('/streamed.bin'))).toBe(sha(Buffer.concat([first, second])));
      await fs.unmount();
    } finally {
      await fx.close();
    }
    // The copy was never unmounted: not clean, and otherwise whole, with every file written before the sync.
    expect(dumpe2fs(copy)['Filesystem state']).toBe('not clean');
    const f = e2fsck(copy);
    expect(f.status, f.output).toBe(0);
    for (const [p, data] of files) expect(sha(debugfsCat(copy, p)), p).toBe(sha(data));
    expect(e2fsck(img).status).toBe(0);
  });
});

describe('errors the disk gives under a change', () => {
  const tmp = scratch();
  afterAll(() => tmp.remove());

  it('are recorded in the superblock at unmount, so that the next mount refuses to write and e2fsck checks', async () => {
    const tree = join(tmp.dir, 'tree');
    run('mkdir', ['-p', tree]);
    writeFileSync(join(tree, 'a.txt'), 'hello\n');
    const img = join(tmp.dir, 'err.img');
    blankImage(img, 16 << 20);
    mkfsExt4(img, tree);
    const fx = await diskFixture({ image: img });
    try {
      const fs = await mountExt(fx.dev);
      fx.disk.inject({ kind: 'error', ops: ['write'], count: 1 });
      await expect(fs.writeFile('/lost.bin', Buffer.alloc(100_000, 1))).rejects.toMatchObject({ code: 'FS_EIO' });
      await fs.unmount();
      const sb = dumpe2fs(img);
      expect(sb['Filesystem state']).toMatch(/with errors/);
      expect(sb['FS Error count']).toBe('1');
      expect(sb['Last error function'] ?? sb['First error function']).toBe('xen-blkfront');
      await expect(mountExt(fx.dev)).rejects.toMatchObject({ code: 'FS_EDIRTY' });
    } finally {
      await fx.close();
    }
  });
});
