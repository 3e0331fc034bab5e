/**
 * Disk images made by the real tools (e2fsprogs' mkfs.ext4 -d, util-linux's
 * sfdisk, gdisk's sgdisk), with a known tree of files, and the real tools'
 * verdicts on them afterwards (e2fsck -fn, debugfs).
 */
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BlockTarget } from '../../src/index.js';

const SBIN = { PATH: `/usr/sbin:/sbin:${process.env.PATH ?? ''}` };

export function run(cmd: string, args: string[], input?: string): string {
  return execFileSync(cmd, args, {
    env: { ...process.env, ...SBIN },
    input,
    stdio: ['pipe', 'pipe', 'pipe'],
    maxBuffer: 1 << 28,
  }).toString();
}

export const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

/** A scratch directory, removed by the returned function. */
export function scratch(): { dir: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'xenfs-test-'));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Path (from the file system's root) → sha256 of its bytes, for every regular file of the tree. */
export type Tree = Map<string, string>;

/**
 * Lays out the known tree under `dir`: nested folders, a large file (not a
 * whole number of blocks), a sparse file, a name of 255 bytes, empty and
 * small files. Returns the hashes.
 */
export function makeTree(dir: string, largeBytes = 3_000_001): Tree {
  const tree: Tree = new Map();
  const put = (rel: string, data: Uint8Array): void => {
    writeFileSync(join(dir, rel), data);
    tree.set('/' + rel, sha(data));
  };
  mkdirSync(join(dir, 'a/b/c/d'), { recursive: true });
  mkdirSync(join(dir, 'docs'), { recursive: true });
  put('large.bin', randomBytes(largeBytes));
  put('empty', new Uint8Array(0));
  put('a/one-byte', Buffer.from('x'));
  put('a/b/block-4096', randomBytes(4096));
  put('a/b/c/block-4095', randomBytes(4095));
  put('a/b/c/d/deep.txt', Buffer.from('deep in the tree\n'));
  put('docs/' + 'n'.repeat(251) + '.txt', Buffer.from('a name of 255 bytes\n'));
  put('docs/utf8-名前.txt', Buffer.from('non-ASCII name\n'));
  for (let i = 0; i < 20; i++) put(`docs/small-${i}.txt`, randomBytes(100 + i * 97));
  // Sparse: a hole of 8 MiB, then data.
  const sparse = join(dir, 'sparse.img');
  writeFileSync(sparse, '');
  truncateSync(sparse, 8 << 20);
  const tail = Buffer.from('after the hole\n');
  writeFileSync(sparse, tail, { flag: 'a' });
  const whole = Buffer.concat([Buffer.alloc(8 << 20), tail]);
  tree.set('/sparse.img', sha(whole));
  return tree;
}

/** An empty image file of `bytes`. */
export function blankImage(path: string, bytes: number): void {
  writeFileSync(path, '');
  truncateSync(path, bytes);
}

/** mkfs.ext4 -d `tree` on the whole image (or at `offsetBytes`, `sizeBytes` long). */
export function mkfsExt4(
  image: string,
  tree: string,
  opts: { offsetBytes?: number; sizeBytes?: number; blockSize?: number; label?: string } = {},
): void {
  const args = ['-q', '-F', '-d', tree, '-L', opts.label ?? 'xenfs-test'];
  if (opts.blockSize !== undefined) args.push('-b', String(opts.blockSize));
  if (opts.offsetBytes !== undefined) args.push('-E', `offset=${opts.offsetBytes}`);
  args.push(image);
  if (opts.sizeBytes !== undefined) args.push(`${opts.sizeBytes / 1024}k`);
  run('mkfs.ext4', args);
}

/** e2fsprogs' unix I/O manager takes a file system at an offset as `image?offset=N`. */
const at = (image: string, offsetBytes: number): string => (offsetBytes === 0 ? image : `${image}?offset=${offsetBytes}`);

/** `e2fsck -fn` (or `flags`, e.g. `-fy` to repair) on the image (at `offsetBytes`): its exit status and output. */
export function e2fsck(image: string, offsetBytes = 0, flags = '-fn'): { status: number; output: string } {
  try {
    return { status: 0, output: run('e2fsck', [flags, at(image, offsetBytes)]) };
  } catch (err) {
    const e = err as { status?: number; stdout?: Buffer; stderr?: Buffer };
    return { status: e.status ?? -1, output: `${e.stdout?.toString() ?? ''}${e.stderr?.toString() ?? ''}` };
  }
}

/** `dumpe2fs -h`'s superblock fields by name ("Filesystem state", "Mount count", …). */
export function dumpe2fs(image: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of run('dumpe2fs', ['-h', image]).split('\n')) {
    const m = /^([^:]+):\s+(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** A file's bytes as debugfs reads them from the image (at `offsetBytes`). */
export function debugfsCat(image: string, path: string, offsetBytes = 0): Buffer {
  return execFileSync('debugfs', ['-R', `cat "${path}"`, at(image, offsetBytes)], {
    env: { ...process.env, ...SBIN },
    stdio: ['pipe', 'pipe', 'pipe'],
    maxBuffer: 1 << 28,
  });
}

/** debugfs `ls -p` of a directory: the names in it. */
export function debugfsLs(image: string, path: string, offsetBytes = 0): string[] {
  const out = execFileSync('debugfs', ['-R', `ls -p "${path}"`, at(image, offsetBytes)], {
    env: { ...process.env, ...SBIN },
    stdio: ['pipe', 'pipe', 'pipe'],
  }).toString();
  // ls -p: /inode/mode/uid/gid/name/size/
  return out
    .split('\n')
    .filter((l) => l.startsWith('/'))
    .map((l) => l.split('/')[5]!)
    .filter((n) => n !== '.' && n !== '..');
}

/** `sfdisk --json` of an image: the table as util-linux reads it. */
export function sfdiskJson(image: string): {
  label: string;
  id: string;
  partitions: Array<{ node: string; start: number; size: number; type: string; uuid?: string; name?: string }>;
} {
  return (JSON.parse(run('sfdisk', ['--json', image])) as { partitiontable: ReturnType<typeof sfdiskJson> }).partitiontable;
}

/** An in-memory disk (for parser tests that need no ring), optionally over an image's bytes. */
export class MemoryTarget implements BlockTarget {
  readonly bytes: Uint8Array;
  readOnly = false;
  canDiscard = false;
  writes: Array<{ offset: number; length: number }> = [];
  constructor(
    source: Uint8Array | number,
    readonly sectorSize = 512,
  ) {
    this.bytes = typeof source === 'number' ? new Uint8Array(source) : source;
  }
  static fromFile(path: string): MemoryTarget {
    return new MemoryTarget(new Uint8Array(readFileSync(path)));
  }
  get size(): number {
    return this.bytes.length;
  }
  private check(offset: number, length: number): void {
    if (offset % this.sectorSize !== 0 || length % this.sectorSize !== 0 || offset + length > this.size) {
      throw new Error(`memory target: bad I/O ${offset}+${length}`);
    }
  }
  async readInto(offset: number, dst: Uint8Array): Promise<void> {
    this.check(offset, dst.byteLength);
    dst.set(this.bytes.subarray(offset, offset + dst.byteLength));
  }
  async write(offset: number, data: Uint8Array): Promise<void> {
    this.check(offset, data.byteLength);
    this.writes.push({ offset, length: data.byteLength });
    this.bytes.set(data, offset);
  }
  async flush(): Promise<void> {}
  async discard(): Promise<void> {}
  allocBuffer(length: number): Uint8Array {
    return new Uint8Array(length);
  }
  freeBuffer(_buf: Uint8Array): void {}
}
