/**
 * Files out of ext4 through the driver, against the same library (libext2fs
 * in WebAssembly) on the same image file read directly with file-disk's
 * file adapter, in the same process; and a vbd read as a stream against
 * blkbench's sequential reads at the same depth:
 *
 *   npm run bench:files [-- --large-mib 256 --files 2000 --json]
 *
 * Ratios are the figures that count (both sides share the machine, the
 * process and the moment): large-file copy ≥ 0.8, small files ≥ 0.7,
 * streams ≥ 0.9 of blkbench. Each side runs twice, best kept.
 */
import { createHash, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import {
  closeSync,
  createWriteStream,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { open as openFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ext2fs } from '../src/fs/ext2fs.js';
import { FileDisk } from 'file-disk';
import { createReadStream, mountExt, type BlockDevice } from '../src/index.js';
import { openDisk } from '../src/cli/common/disk.js';
import { main as blkbench } from '../src/cli/blkbench/main.js';
import { defaultTmpdir } from '../src/cli/blkbench/targets.js';

const { values } = parseArgs({
  options: {
    'large-mib': { type: 'string', default: '256' },
    files: { type: 'string', default: '2000' },
    depth: { type: 'string', default: '8' },
    json: { type: 'boolean', default: false },
  },
});
const largeBytes = Number(values['large-mib']) << 20;
const nFiles = Number(values.files);
const depth = Number(values.depth);
/** Seconds each side of the stream comparison runs. */
const STREAM_S = 3;

const dir = mkdtempSync(join(defaultTmpdir(), 'bench-files-'));
const tree = join(dir, 'tree');
const image = join(dir, 'ext4.img');
const sink = join(dir, 'copy.bin');
const say = (s: string): void => {
  if (!values.json) process.stdout.write(s);
};

/** The tree: one large file, and `nFiles` small ones (1–16 KiB) in 40 folders. */
function layOutTree(): void {
  mkdirSync(tree, { recursive: true });
  // Each MiB of the large file starts with its number (mod 256), so neighbouring ones differ.
  const chunk = randomBytes(1 << 20);
  const fd = openSync(join(tree, 'large.bin'), 'w');
  for (let i = 0; i < largeBytes >> 20; i++) {
    chunk[0] = i & 255;
    writeSync(fd, chunk);
  }
  closeSync(fd);
  for (let d = 0; d < 40; d++) mkdirSync(join(tree, 'small', `d${d}`), { recursive: true });
  for (let i = 0; i < nFiles; i++) writeFileSync(join(tree, 'small', `d${i % 40}`, `f${i}.dat`), randomBytes(1024 + ((i * 7919) % 15360)));
  const bytes = largeBytes + nFiles * 16384 + (64 << 20);
  writeFileSync(image, '');
  truncateSync(image, Math.ceil((bytes * 1.15) / (1 << 20)) << 20);
  execFileSync('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', tree, image], {
    env: { ...process.env, PATH: `/usr/sbin:/sbin:${process.env.PATH ?? ''}` },
  });
}

/** What one side does: copy the large file to tmpfs, or read every small file; hashes to compare the sides. */
interface Side {
  seconds: number;
  cpuSeconds: number;
  hash: string;
  bytes: number;
}

async function timed(fn: () => Promise<{ hash: string; bytes: number }>): Promise<Side> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = await fn();
  const seconds = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { seconds, cpuSeconds: (c.user + c.system) / 1e6, ...r };
}

const smallPaths = (): string[] => Array.from({ length: nFiles }, (_, i) => `/small/d${i % 40}/f${i}.dat`);

/** The baseline: the library itself on the image file (file-disk), files read through descriptors in 1 MiB chunks. */
async function direct(kind: 'large' | 'small'): Promise<Side> {
  const handle = await openFile(image, 'r');
  const fs = await ext2fs.mount(new FileDisk(handle, true));
  const p = fs.promises;
  const readAll = async (path: string, each: (b: Buffer) => void): Promise<number> => {
    const h = await p.open(path, 'r');
    const size = (await p.fstat(h.fd)).size;
    let pos = 0;
    while (pos < size) {
      const want = Math.min(1 << 20, size - pos);
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await p.read(h.fd, buf, 0, want, pos);
      if (bytesRead <= 0) throw new Error(`${path} ended at ${pos}`);
      each(bytesRead === want ? buf : buf.subarray(0, bytesRead));
      pos += bytesRead;
    }
    await p.close(h.fd);
    return size;
  };
  try {
    return await timed(async () => {
      const hash = createHash('sha256');
      let bytes = 0;
      if (kind === 'large') {
        const out = createWriteStream(sink);
        bytes = await readAll('/large.bin', (b) => {
          hash.update(b);
          out.write(b);
        });
        await new Promise((r) => out.end(r));
      } else {
        for (const path of smallPaths()) bytes += await readAll(path, (b) => hash.update(b));
      }
      return { hash: hash.digest('hex'), bytes };
    });
  } finally {
    await ext2fs.umount(fs);
    await handle.close();
  }
}

async function withDevice<T>(fn: (dev: BlockDevice) => Promise<T>): Promise<T> {
  const d = await openDisk({ kind: 'image', path: image }, 'bench-files');
  try {
    return await fn(d.device);
  } finally {
    await d.close();
  }
}

/** Through the driver: the same files, through mountExt on the vbd. */
function driver(kind: 'large' | 'small'): Promise<Side> {
  return withDevice(async (dev) => {
    const fs = await mountExt(dev, { readOnly: true });
    try {
      return await timed(async () => {
        const hash = createHash('sha256');
        let bytes = 0;
        if (kind === 'large') {
          const tap = new Writable({
            write(c: Buffer, _e, cb) {
              hash.update(c);
              bytes += c.length;
              if (out.write(c)) cb();
              else out.once('drain', cb);
            },
            final(cb) {
              out.end(cb);
            },
          });
          const out = createWriteStream(sink);
          await pipeline(fs.createReadStream('/large.bin'), tap);
        } else {
          for (const path of smallPaths()) {
            const b = await fs.readFile(path);
            hash.update(b);
            bytes += b.length;
          }
        }
        return { hash: hash.digest('hex'), bytes };
      });
    } finally {
      await fs.unmount();
    }
  });
}

/**
 * The whole vbd as a stream (1 MiB chunks, `depth` in flight), consumed as it comes, pass after
 * pass for `STREAM_S` seconds (one pass of a few hundred MiB is over in a tenth of a second),
 * after a warm-up pass of 64 MiB: a device's first buffers are granted and mapped by the backend
 * on first use, as blkbench's are before it measures.
 */
function vbdStream(): Promise<{ seconds: number; bytes: number; cpuSeconds: number }> {
  return withDevice(async (dev) => {
    for await (const _ of createReadStream(dev, { chunkSize: 1 << 20, depth, end: (64 << 20) - 1 })) {
      /* warm-up */
    }
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    let bytes = 0;
    while (performance.now() - t0 < STREAM_S * 1000) {
      for await (const c of createReadStream(dev, { chunkSize: 1 << 20, depth })) bytes += (c as Buffer).length;
    }
    const c = process.cpuUsage(c0);
    return { seconds: (performance.now() - t0) / 1000, bytes, cpuSeconds: (c.user + c.system) / 1e6 };
  });
}

/** blkbench's sequential 1 MiB reads of the same image at the same depth, for `STREAM_S` seconds, in this process. */
async function blkbenchSeq(zeroCopy: boolean): Promise<{ bandwidth: number; cpuUsPerIo: number }> {
  let text = '';
  const args = [
    '--image',
    image,
    '--rw',
    'read',
    '--bs',
    '1m',
    '--iodepth',
    String(depth),
    '--runtime',
    String(STREAM_S),
    '--ramp-time',
    '0.5',
    '--json',
    '--no-latency',
    '--no-progress',
  ];
  if (zeroCopy) args.push('--zero-copy');
  const code = await blkbench(
    args,
    {
      write: (t: string) => {
        text += t;
      },
    },
    process.stderr,
  );
  if (code !== 0) throw new Error(`blkbench exited ${code}`);
  const r = JSON.parse(text) as { bandwidth_bytes_per_s: number; cpu_us_per_io: { process: number } };
  return { bandwidth: r.bandwidth_bytes_per_s, cpuUsPerIo: r.cpu_us_per_io.process };
}

const best = <T extends { seconds: number }>(a: T, b: T): T => (a.seconds <= b.seconds ? a : b);
const mbps = (bytes: number, s: number): number => bytes / s / (1 << 20);

async function main(): Promise<void> {
  say(`bench:files: laying out ${largeBytes >> 20} MiB + ${nFiles} small files, mkfs.ext4 -d into ${image}\n`);
  layOutTree();
  say(`  image ${(statSync(image).size / (1 << 20)).toFixed(0)} MiB\n`);
  const out: Record<string, unknown> = { large_bytes: largeBytes, small_files: nFiles, depth };
  // The stream comparison first, while the heap is small: the file phases leave a large one behind,
  // and every fresh chunk a stream hands out is garbage the collector then has to walk past.
  const s = await vbdStream();
  const bb = await blkbenchSeq(false);
  const bz = await blkbenchSeq(true);
  const sbw = s.bytes / s.seconds;
  out.stream = {
    bandwidth: sbw,
    blkbench_bandwidth: bb.bandwidth,
    ratio: sbw / bb.bandwidth,
    blkbench_zero_copy_bandwidth: bz.bandwidth,
    ratio_zero_copy: sbw / bz.bandwidth,
    target: 0.9,
  };
  say(
    `  vbd read stream, depth ${depth}        ${(sbw / (1 << 20)).toFixed(0)} MiB/s; blkbench sequential 1 MiB reads at depth ${depth}: ` +
      `${(bb.bandwidth / (1 << 20)).toFixed(0)} MiB/s: ratio ${(sbw / bb.bandwidth).toFixed(2)} (target 0.9) ${sbw / bb.bandwidth >= 0.9 ? 'met' : 'MISSED'}; ` +
      `against blkbench --zero-copy (no copy to the caller at all, ${(bz.bandwidth / (1 << 20)).toFixed(0)} MiB/s) ${(sbw / bz.bandwidth).toFixed(2)}\n`,
  );
  for (const kind of ['large', 'small'] as const) {
    const d = best(await direct(kind), await direct(kind));
    const v = best(await driver(kind), await driver(kind));
    if (d.hash !== v.hash || d.bytes !== v.bytes)
      throw new Error(
        `${kind}: the driver read different bytes (${v.bytes}, ${v.hash.slice(0, 12)}) than the file (${d.bytes}, ${d.hash.slice(0, 12)})`,
      );
    const ratio = d.seconds / v.seconds;
    const target = kind === 'large' ? 0.8 : 0.7;
    out[kind] = {
      driver_s: v.seconds,
      direct_s: d.seconds,
      ratio,
      target,
      driver_cpu_s: v.cpuSeconds,
      direct_cpu_s: d.cpuSeconds,
      bytes: v.bytes,
    };
    const what = kind === 'large' ? `copy of a ${largeBytes >> 20} MiB file` : `${nFiles} small files read`;
    say(
      `  ${what.padEnd(32)} driver ${v.seconds.toFixed(2)} s (${mbps(v.bytes, v.seconds).toFixed(0)} MiB/s, CPU ${v.cpuSeconds.toFixed(2)} s), ` +
        `file ${d.seconds.toFixed(2)} s (${mbps(d.bytes, d.seconds).toFixed(0)} MiB/s, CPU ${d.cpuSeconds.toFixed(2)} s): ratio ${ratio.toFixed(2)} (target ${target}) ${ratio >= target ? 'met' : 'MISSED'}\n`,
    );
  }
  if (values.json) process.stdout.write(`${JSON.stringify(out)}\n`);
}

main().then(
  () => rmSync(dir, { recursive: true, force: true }),
  (err: unknown) => {
    rmSync(dir, { recursive: true, force: true });
    process.stderr.write(`bench:files: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
