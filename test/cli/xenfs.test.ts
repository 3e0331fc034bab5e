import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { main } from '../../src/cli/xenfs/main.js';
import { blankImage, debugfsCat, e2fsck, makeTree, mkfsExt4, run, scratch, sha, type Tree } from '../helpers/images.js';

/** Runs xenfs with `args`; its status, stdout (bytes) and stderr. */
async function xenfs(...args: string[]): Promise<{ status: number; out: Buffer; err: string }> {
  const out: Buffer[] = [];
  let err = '';
  const status = await main(
    args,
    { write: (t) => out.push(Buffer.from(t)) },
    {
      write: (t) => {
        err += String(t);
      },
    },
  );
  return { status, out: Buffer.concat(out), err };
}

describe('xenfs on images made by mkfs.ext4 -d, on the embedded simulated host', () => {
  const tmp = scratch();
  const img = join(tmp.dir, 'disk.img');
  const gpt = join(tmp.dir, 'gpt.img');
  let tree: Tree;
  beforeAll(() => {
    const dir = join(tmp.dir, 'tree');
    run('mkdir', ['-p', dir]);
    tree = makeTree(dir, 1_000_003);
    blankImage(img, 32 << 20);
    mkfsExt4(img, dir);
    blankImage(gpt, 48 << 20);
    run('sgdisk', ['-n', '1:2048:+8M', '-n', '2:0:+32M', '-t', '2:8300', gpt]);
    mkfsExt4(gpt, dir, { offsetBytes: 18432 * 512, sizeBytes: 32 << 20 });
  });
  afterAll(() => tmp.remove());

  it("ls / and cat: the tree's names, and every file's raw bytes", async () => {
    const ls = await xenfs('--image', img, 'ls', '/');
    expect(ls.status).toBe(0);
    expect(ls.out.toString().split('\n').filter(Boolean).sort()).toEqual([
      'a/',
      'docs/',
      'empty',
      'large.bin',
      'lost+found/',
      'sparse.img',
    ]);
    for (const [path, hash] of tree) {
      const cat = await xenfs('--image', img, 'cat', path);
      expect(cat.status, cat.err).toBe(0);
      expect(sha(cat.out), path).toBe(hash);
    }
    // The whole tree copied out in one run.
    const out = join(tmp.dir, 'out');
    const get = await xenfs('--image', img, 'get', '-r', '/', out);
    expect(get.status, get.err).toBe(0);
    expect(get.err).toMatch(new RegExp(`^xenfs: ${tree.size} files, \\d+ folders, .* copied out\n$`));
    for (const [path, hash] of tree) expect(sha(readFileSync(join(out, path))), path).toBe(hash);
    expect((await xenfs('--image', img, 'get', '/a', join(tmp.dir, 'x'))).err).toMatch(/is a directory \(give -r/);
    const long = await xenfs('--image', img, 'ls', '-l', '/a/b');
    expect(long.out.toString()).toMatch(/^-rw-r--r-- +1 +4096 \d{4}-\d\d-\d\d \d\d:\d\d block-4096\n/m);
  });

  it('put, get, mkdir, rm, stat, df on partition 2 of a GPT disk; e2fsck -fn and debugfs agree afterwards', async () => {
    const local = join(tmp.dir, 'up.bin');
    const data = randomBytes(2_345_679);
    writeFileSync(local, data);
    expect((await xenfs('--image', gpt, '--partition', '2', 'mkdir', '-p', '/up/load')).status).toBe(0);
    const put = await xenfs('--image', gpt, '--partition', '2', 'put', local, '/up/load/file.bin');
    expect(put.status, put.err).toBe(0);
    const back = join(tmp.dir, 'back.bin');
    const get = await xenfs('--image', gpt, '--partition', '2', '--progress', 'get', '/up/load/file.bin', back);
    expect(get.status).toBe(0);
    expect(get.err).toMatch(/\[#{30}\] 100% 2\.2 MiB \/ 2\.2 MiB .*\/s\n$/); // the progress bar, finished
    expect(sha(readFileSync(back))).toBe(sha(data));
    const st = JSON.parse((await xenfs('--image', gpt, '--partition', '2', 'stat', '/up/load/file.bin')).out.toString()) as {
      size: number;
      type: string;
    };
    expect(st).toMatchObject({ size: data.length, type: 'file' });
    expect((await xenfs('--image', gpt, '--partition', '2', 'rm', '-r', '/docs')).status).toBe(0);
    // A local tree copied in, then out again: the same files.
    const putTree = await xenfs('--image', gpt, '--partition', '2', 'put', '-r', join(tmp.dir, 'tree', 'a'), '/copied/a');
    expect(putTree.status, putTree.err).toBe(0);
    const again = join(tmp.dir, 'again');
    expect((await xenfs('--image', gpt, '--partition', '2', 'get', '-r', '/copied', again)).status).toBe(0);
    for (const [path, hash] of tree) if (path.startsWith('/a/')) expect(sha(readFileSync(join(again, path))), path).toBe(hash);
    const df = await xenfs('--image', gpt, '--partition', '2', 'df');
    expect(df.out.toString()).toMatch(
      /^ext4 "xenfs-test" [0-9a-f-]{36}: 32 MiB, .* used, .* free; \d+ of \d+ inodes used; block size \d+\n$/,
    );
    const parts = await xenfs('--image', gpt, 'parts');
    expect(parts.out.toString()).toMatch(
      /^GPT [0-9A-F-]{36}\n +1 +start +1048576 .*\n +2 +start +9437184 +size +32 MiB +Linux filesystem\n$/,
    );
    expect(e2fsck(gpt, 18432 * 512).status).toBe(0);
    expect(sha(debugfsCat(gpt, '/up/load/file.bin', 18432 * 512))).toBe(sha(data));
  });

  it('clear one-line errors with their codes: no such file, no such partition, read-only, no file system, no table, bad usage', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--image', img, 'cat', '/nope'], /^xenfs: open \/nope: no such file or directory \[FS_ENOENT\]\n$/],
      [['--image', gpt, '--partition', '7', 'ls'], /^xenfs: no partition 7 \(the GPT has: 1, 2\) \[PART_ENOENT\]\n$/],
      [
        ['--image', img, '--read-only', 'put', join(tmp.dir, 'up.bin'), '/x'],
        /^xenfs: open \/x: the file system is mounted read-only \[FS_EROFS\]\n$/,
      ],
      [['--image', gpt, '--partition', '1', 'ls'], /^xenfs: no ext2\/3\/4 file system found .* \[FS_ENOFS\]\n$/],
      [['--image', img, 'parts'], /^xenfs: no partition table: .* \[PART_ENOTABLE\]\n$/],
      [['--image', join(tmp.dir, 'missing.img'), 'ls'], /^xenfs: ENOENT: no such file or directory.*\n$/],
      [['--image', img, 'cat', '/docs'], /^xenfs: read \/docs: is a directory \[FS_EISDIR\]\n$/],
    ];
    for (const [args, want] of cases) {
      const r = await xenfs(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.err, args.join(' ')).toMatch(want);
    }
    const usage = await xenfs('--image', img, 'frobnicate');
    expect(usage.status).toBe(2);
    expect(usage.err).toMatch(/Try 'xenfs --help'/);
    expect((await xenfs('--image', img, '--xen', 'ls')).status).toBe(2);
  });
});
