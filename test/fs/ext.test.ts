import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pipeline } from 'node:stream/promises';
import { Writable } from 'node:stream';
import { FsError, mountExt, openPartition, probeExt, type BlockTarget, type ExtFileSystem } from '../../src/index.js';
import { blankImage, debugfsCat, debugfsLs, e2fsck, makeTree, mkfsExt4, run, scratch, sha, type Tree } from '../helpers/images.js';
import { diskFixture } from '../helpers/blk.js';
import { DEVICE_BATCHES } from '../../src/disk/cached.js';

/** Every file of `tree`, read through `fs` two ways (whole, and as a stream of 64 KiB chunks), hashed. */
async function checkTree(fs: ExtFileSystem, tree: Tree): Promise<number> {
  let bytes = 0;
  for (const [path, hash] of tree) {
    const whole = await fs.readFile(path);
    expect(sha(whole), `readFile ${path}`).toBe(hash);
    const chunks: Buffer[] = [];
    await pipeline(
      fs.createReadStream(path, { chunkSize: 65536 }),
      new Writable({
        write(c: Buffer, _e, cb) {
          chunks.push(c);
          cb();
        },
      }),
    );
    expect(sha(Buffer.concat(chunks)), `stream ${path}`).toBe(hash);
    bytes += whole.length;
  }
  return bytes;
}

describe('ext4 made by mkfs.ext4 -d, through the driver', () => {
  const tmp = scratch();
  let tree: Tree;
  const treeDir = join(tmp.dir, 'tree');
  beforeAll(() => {
    run('mkdir', ['-p', treeDir]);
    tree = makeTree(treeDir);
  });
  afterAll(() => tmp.remove());

  it("whole disk, 1 KiB blocks: every file of the tree reads back with its hash; the listing is the tree's", async () => {
    const img = join(tmp.dir, 'whole.img');
    blankImage(img, 48 << 20);
    mkfsExt4(img, treeDir, { blockSize: 1024 });
    const fx = await diskFixture({ image: img });
    try {
      const fs = await mountExt(fx.dev, { readOnly: true });
      expect((await fs.readdir('/')).sort()).toEqual(['a', 'docs', 'empty', 'large.bin', 'lost+found', 'sparse.img']);
      expect((await fs.readdir('/docs')).length).toBe(22);
      const sparse = await fs.stat('/sparse.img');
      expect(sparse.size).toBe((8 << 20) + 15);
      expect(sparse.blocks).toBeLessThan(64); // the hole has no blocks
      expect(await checkTree(fs, tree)).toBeGreaterThan(11_000_000);
      expect(fs.stats().cacheHits).toBeGreaterThan(0);
      // The large file's readahead batches went into the device's own buffers (filled in place, no
      // bounce), a few of them (1 MiB each); unmounted, they are given back and reused by the next mount.
      const dev = fx.dev.stats();
      expect(dev.zeroCopy).toBeGreaterThan(0);
      expect(dev.bufferPages).toBeGreaterThan(0);
      expect(dev.bufferPages).toBeLessThanOrEqual(DEVICE_BATCHES * 256);
      await fs.unmount();
      await expect(fs.readdir('/')).rejects.toMatchObject({ code: 'FS_CLOSED' });
      const again = await mountExt(fx.dev, { readOnly: true });
      expect(sha(await again.readFile('/large.bin'))).toBe(tree.get('/large.bin'));
      await again.unmount();
      expect(fx.dev.stats().zeroCopy).toBeGreaterThan(dev.zeroCopy);
      expect(fx.dev.stats().bufferPages).toBe(dev.bufferPages);
    } finally {
      await fx.close();
    }
    expect(e2fsck(img).status).toBe(0);
  });

  it('GPT partition, 4 KiB blocks: write, rename and delete files of many sizes; e2fsck -fn is clean and debugfs reads them; nothing outside the partition changes', async () => {
    const img = join(tmp.dir, 'gpt.img');
    blankImage(img, 64 << 20);
    run('sgdisk', ['-n', '1:2048:+40M', '-t', '1:8300', '-n', '2:0:0', img]);
    const p1 = 2048 * 512;
    mkfsExt4(img, treeDir, { offsetBytes: p1, sizeBytes: 40 << 20, blockSize: 4096 });
    // Partition 2 and the space around the table hold a pattern that must survive.
    const before = readFileSync(img);
    const outside = (b: Buffer): string => sha(Buffer.concat([b.subarray(0, p1), b.subarray(p1 + (40 << 20))]));
    const fx = await diskFixture({ image: img });
    const written = new Map<string, Buffer>();
    try {
      const part = await openPartition(fx.dev, 1);
      const fs = await mountExt(part);
      await checkTree(fs, tree);
      await fs.mkdir('/new/deeper/still', { recursive: true });
      for (const size of [0, 1, 511, 4095, 4096, 4097, 65536 + 7, 1 << 20, 3_000_003]) {
        const data = randomBytes(size);
        const path = `/new/deeper/file-${size}`;
        await fs.writeFile(path, data);
        written.set(path, data);
      }
      const streamed = randomBytes(2_500_000);
      await pipeline(async function* () {
        for (let i = 0; i < streamed.length; i += 100_000) yield streamed.subarray(i, i + 100_000);
      }, fs.createWriteStream('/new/streamed.bin'));
      written.set('/new/streamed.bin', streamed);
      await fs.rename('/new/deeper/file-1', '/new/renamed');
      written.set('/new/renamed', written.get('/new/deeper/file-1')!);
      written.delete('/new/deeper/file-1');
      await fs.rm('/a', { recursive: true });
      await fs.unlink('/large.bin');
      await expect(fs.rm('/docs')).rejects.toMatchObject({ code: 'FS_EISDIR' });
      await expect(fs.rmdir('/docs')).rejects.toMatchObject({ code: 'FS_ENOTEMPTY' });
      await expect(fs.mkdir('/docs')).rejects.toMatchObject({ code: 'FS_EEXIST' });
      await expect(fs.readFile('/a/one-byte')).rejects.toMatchObject({ code: 'FS_ENOENT', path: '/a/one-byte' });
      await expect(fs.readFile('/docs')).rejects.toMatchObject({ code: 'FS_EISDIR' });
      for (const [path, data] of written) expect(sha(await fs.readFile(path)), path).toBe(sha(data));
      await fs.unmount();
    } finally {
      await fx.close();
    }
    const after = readFileSync(img);
    expect(outside(after)).toBe(outside(before));
    const fsck = e2fsck(img, p1);
    expect(fsck.status, fsck.output).toBe(0);
    for (const [path, data] of written) expect(sha(debugfsCat(img, path, p1)), `debugfs cat ${path}`).toBe(sha(data));
    expect(debugfsLs(img, '/', p1).sort()).toEqual(['docs', 'empty', 'lost+found', 'new', 'sparse.img']);
    expect(debugfsLs(img, '/new', p1).sort()).toEqual(['deeper', 'renamed', 'streamed.bin']);
    // Mounted again, through the driver, it is all still there.
    const fx2 = await diskFixture({ image: img });
    try {
      const fs = await mountExt(await openPartition(fx2.dev, 1), { readOnly: true });
      for (const [path, data] of written) expect(sha(await fs.readFile(path))).toBe(sha(data));
      await fs.unmount();
    } finally {
      await fx2.close();
    }
  });

  it('not ext: FS_ENOFS, before the library is asked; a read-only vbd mounts read-only, refuses changes with FS_EROFS and the image stays as it was', async () => {
    const blank = join(tmp.dir, 'blank.img');
    blankImage(blank, 4 << 20);
    const fx = await diskFixture({ image: blank });
    try {
      await expect(mountExt(fx.dev)).rejects.toMatchObject({
        code: 'FS_ENOFS',
        message: expect.stringMatching(/no ext2\/3\/4 file system/),
      });
      await expect(probeExt(fx.dev)).rejects.toBeInstanceOf(FsError);
    } finally {
      await fx.close();
    }
    const img = join(tmp.dir, 'ro.img');
    blankImage(img, 32 << 20);
    mkfsExt4(img, treeDir);
    const hash = sha(readFileSync(img));
    const ro = await diskFixture({ image: img, readOnly: true });
    try {
      const fs = await mountExt(ro.dev);
      expect(fs.readOnly).toBe(true);
      await checkTree(fs, tree);
      await expect(fs.writeFile('/x', 'x')).rejects.toMatchObject({ code: 'FS_EROFS' });
      await expect(fs.mkdir('/y')).rejects.toMatchObject({ code: 'FS_EROFS' });
      await expect(fs.unlink('/empty')).rejects.toMatchObject({ code: 'FS_EROFS' });
      await fs.unmount();
      expect((await probeExt(ro.dev)).label).toBe('xenfs-test');
    } finally {
      await ro.close();
    }
    expect(sha(readFileSync(img))).toBe(hash);
  });

  it("the disk detached in the middle of a copy: the copy fails with a typed error naming the device's, the process goes on", async () => {
    const img = join(tmp.dir, 'detach.img');
    blankImage(img, 64 << 20);
    mkfsExt4(img, treeDir, { blockSize: 4096 });
    const fx = await diskFixture({ image: img }, { reconnectTimeoutMs: 500 });
    let err: unknown = null;
    try {
      const fs = await mountExt(fx.dev);
      const big = randomBytes(24 << 20);
      let sent = 0;
      const copy = pipeline(async function* () {
        for (; sent < big.length; sent += 256 << 10) {
          if (sent === 4 << 20) void fx.disk.detach(200);
          yield big.subarray(sent, sent + (256 << 10));
        }
      }, fs.createWriteStream('/big-copy'));
      err = await copy.then(
        () => null,
        (e: unknown) => e,
      );
      await fs.unmount().catch(() => undefined);
    } finally {
      await fx.close().catch(() => undefined);
    }
    expect(err).toBeInstanceOf(FsError);
    expect((err as FsError).code).toBe('FS_EIO');
    expect((err as FsError).message).toMatch(/the disk failed \[BLKIF_/);
  });
});

/** A target that records the bytes it is asked for (for the adapter's alignment). */
describe('file system on 4 KiB sectors with 1 KiB blocks', () => {
  it('unaligned block I/O is read whole and merged; e2fsck is clean afterwards', async () => {
    const tmp = scratch();
    try {
      const treeDir = join(tmp.dir, 't');
      run('mkdir', ['-p', treeDir]);
      const tree = makeTree(treeDir, 500_001);
      const img = join(tmp.dir, 'i.img');
      blankImage(img, 32 << 20);
      mkfsExt4(img, treeDir, { blockSize: 1024 });
      const fx = await diskFixture({ image: img, sectorSize: 4096 });
      try {
        const target: BlockTarget = fx.dev;
        expect(target.sectorSize).toBe(4096);
        const fs = await mountExt(target);
        await checkTree(fs, tree);
        const data = randomBytes(70_001);
        await fs.writeFile('/odd', data);
        expect(sha(await fs.readFile('/odd'))).toBe(sha(data));
        await fs.unmount();
      } finally {
        await fx.close();
      }
      expect(e2fsck(img).status).toBe(0);
    } finally {
      tmp.remove();
    }
  });
});
