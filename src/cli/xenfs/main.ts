/**
 * xenfs: files on a Xen virtual disk, from userspace. Lists, reads and
 * writes an ext2/3/4 file system on a vbd (or one of its partitions)
 * through the driver: on the embedded simulated host serving an image
 * (`--image FILE`), or on the real guest (`--xen --vdev N`).
 */
import {
  createReadStream as fsReadStream,
  createWriteStream as fsWriteStream,
  mkdirSync,
  readdirSync,
  readlinkSync,
  statSync,
  symlinkSync,
} from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { EventEmitter, once } from 'node:events';
import yargs from 'yargs';
import {
  listBlockDevices,
  mountExt,
  openPartition,
  openXenPlatform,
  probeExt,
  readPartitionTable,
  vdevName,
  type BlockDevice,
  type BlockTarget,
  type ExtFileSystem,
} from '../../index.js';
import { openDisk, type DiskSpec } from '../common/disk.js';
import { bytes } from '../common/format.js';

/** Where main() writes. */
export interface Output {
  write(text: string | Uint8Array): unknown;
}

interface Common {
  image?: string;
  xen?: boolean;
  vdev: number;
  partition?: number;
  readOnly: boolean;
  /** Mount read-write although errors are recorded in the file system. */
  force?: boolean;
  progress?: boolean;
  /** Where the mount's warnings go. */
  warn?: (text: string) => void;
}

/** What a command has to work with; closed by {@link close}. */
interface Opened {
  device: BlockDevice;
  target: BlockTarget;
  close(): Promise<void>;
}

async function openTarget(o: Common): Promise<Opened> {
  let spec: DiskSpec;
  if (o.xen === true) spec = { kind: 'xen', vdev: o.vdev };
  else {
    if (o.image === undefined) throw new Error('say which disk: --image FILE (simulated host) or --xen --vdev N');
    statSync(o.image); // ENOENT here, in words, rather than from the backend
    spec = { kind: 'image', path: o.image, readOnly: o.readOnly, vdev: o.vdev };
  }
  const disk = await openDisk(spec, 'xenfs');
  try {
    const target: BlockTarget = o.partition === undefined ? disk.device : await openPartition(disk.device, o.partition);
    return { device: disk.device, target, close: () => disk.close().catch(() => undefined) };
  } catch (err) {
    await disk.close().catch(() => undefined);
    throw err;
  }
}

async function withFs<T>(o: Common, write: boolean, fn: (fs: ExtFileSystem, t: Opened) => Promise<T>): Promise<T> {
  const t = await openTarget(o);
  try {
    const fs = await mountExt(t.target, { readOnly: !write || o.readOnly, force: o.force === true });
    for (const w of fs.warnings) o.warn?.(`xenfs: warning: ${w}\n`);
    try {
      return await fn(fs, t);
    } finally {
      await fs.unmount();
    }
  } finally {
    await t.close();
  }
}

const modeString = (mode: number, type: string): string => {
  const c = type === 'directory' ? 'd' : type === 'symlink' ? 'l' : type === 'file' ? '-' : '?';
  let s = c;
  for (let i = 8; i >= 0; i--) s += (mode >> i) & 1 ? 'rwx'[(8 - i) % 3] : '-';
  return s;
};

/** A progress bar on stderr for copies of more than a few MiB, when stderr is a terminal or --progress is given. */
function progress(total: number, err: Output, on: boolean | undefined): Transform {
  const show = on ?? ((process.stderr.isTTY ?? false) && total > 8 << 20);
  let done = 0;
  let last = 0;
  const t0 = performance.now();
  const draw = (final: boolean): void => {
    const frac = total > 0 ? done / total : 1;
    const width = 30;
    const fill = Math.round(frac * width);
    const s = (performance.now() - t0) / 1000;
    err.write(
      `\r[${'#'.repeat(fill)}${'.'.repeat(width - fill)}] ${(frac * 100).toFixed(0).padStart(3)}% ${bytes(done)} / ${bytes(total)} ${s > 0 ? bytes(done / s) : '0 B'}/s${final ? '\n' : ''}`,
    );
  };
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      done += chunk.length;
      const now = performance.now();
      if (show && now - last > 200) {
        last = now;
        draw(false);
      }
      cb(null, chunk);
    },
    flush(cb) {
      if (show) draw(true);
      cb();
    },
  });
}

interface Copied {
  files: number;
  dirs: number;
  bytes: number;
}

/** Copies the tree under `from` (on the disk) to the local folder `to`: folders, files and symlinks. */
async function getTree(fs: ExtFileSystem, from: string, to: string, n: Copied = { files: 0, dirs: 0, bytes: 0 }): Promise<Copied> {
  mkdirSync(to, { recursive: true });
  n.dirs++;
  for (const e of await fs.list(from)) {
    const src = `${from === '/' ? '' : from.replace(/\/+$/, '')}/${e.name}`;
    const dst = join(to, e.name);
    if (e.type === 'directory') await getTree(fs, src, dst, n);
    else if (e.type === 'symlink') symlinkSync(await fs.readlink(src), dst);
    else if (e.type === 'file') {
      await pipeline(fs.createReadStream(src), fsWriteStream(dst));
      n.files++;
      n.bytes += e.size;
    }
  }
  return n;
}

/** Copies the local folder `from` into the disk at `to` (made with its parents when missing). */
async function putTree(fs: ExtFileSystem, from: string, to: string, n: Copied = { files: 0, dirs: 0, bytes: 0 }): Promise<Copied> {
  await fs.mkdir(to, { recursive: true });
  n.dirs++;
  for (const e of readdirSync(from, { withFileTypes: true }).sort((x, y) => (x.name < y.name ? -1 : 1))) {
    const src = join(from, e.name);
    const dst = `${to === '/' ? '' : to.replace(/\/+$/, '')}/${e.name}`;
    if (e.isDirectory()) await putTree(fs, src, dst, n);
    else if (e.isSymbolicLink()) await fs.symlink(readlinkSync(src), dst);
    else if (e.isFile()) {
      await pipeline(fsReadStream(src, { highWaterMark: 1 << 20 }), fs.createWriteStream(dst));
      n.files++;
      n.bytes += statSync(src).size;
    }
  }
  return n;
}

/** Runs xenfs with `args`; resolves to the exit status. */
export async function main(args: string[], out: Output = process.stdout, err: Output = process.stderr): Promise<number> {
  let status = 0;
  const common = (a: unknown): Common => ({ ...(a as Common), warn: (text) => err.write(text) });
  const fail = (e: unknown): void => {
    const code = typeof (e as { code?: unknown }).code === 'string' ? ` [${(e as { code: string }).code}]` : '';
    const msg = e instanceof Error ? e.message : String(e);
    err.write(`xenfs: ${msg.split('\n')[0]}${code}\n`);
    status = 1;
  };
  const run = (fn: () => Promise<void>): Promise<void> => fn().catch(fail);
  if (args.some((a) => a === '--image' || a.startsWith('--image=')) && args.includes('--xen')) {
    err.write("xenfs: --image and --xen are two different disks: give one\nTry 'xenfs --help'.\n");
    return 2;
  }
  const parser = yargs(args)
    .scriptName('xenfs')
    .usage('$0 <command> [options]\n\nFiles on an ext2/3/4 file system on a Xen virtual disk, through the xen-blkfront driver.')
    .option('image', { type: 'string', describe: 'serve this image file from the embedded simulated Xen host' })
    .option('xen', { type: 'boolean', describe: "use the real guest: this domain's vbd --vdev" })
    .option('vdev', { type: 'number', default: 51712, describe: 'virtual-device number (51712 is xvda, 51728 xvdb)' })
    .option('partition', { type: 'number', describe: '1-based partition (as xvda1); without it, the whole disk' })
    .option('read-only', { type: 'boolean', default: false, describe: 'mount read-only (and, on --image, plug the disk read-only)' })
    .option('force', {
      type: 'boolean',
      default: false,
      describe: 'write to a file system with errors recorded in it (one whose journal needs recovery is refused still)',
    })
    .option('progress', {
      type: 'boolean',
      describe: 'a progress bar on copies (default: when stderr is a terminal and the file is over 8 MiB)',
    })
    .command(
      'ls [path]',
      'list a directory',
      (y) =>
        y
          .positional('path', { type: 'string', default: '/' })
          .option('long', { alias: 'l', type: 'boolean', default: false, describe: 'mode, size, date' }),
      (a) =>
        run(() =>
          withFs(common(a), false, async (fs) => {
            const st = await fs.stat(a.path);
            const entries = st.type === 'directory' ? await fs.list(a.path) : [{ name: a.path, ...st }];
            for (const e of entries) {
              out.write(
                a.long
                  ? `${modeString(e.mode, e.type)} ${String(e.links).padStart(3)} ${String(e.size).padStart(12)} ${e.mtime.toISOString().slice(0, 16).replace('T', ' ')} ${e.name}${e.type === 'directory' ? '/' : ''}\n`
                  : `${e.name}${e.type === 'directory' ? '/' : ''}\n`,
              );
            }
          }),
        ),
    )
    .command(
      'cat <path>',
      "write a file's bytes to stdout",
      (y) => y.positional('path', { type: 'string', demandOption: true }),
      (a) =>
        run(() =>
          withFs(common(a), false, async (fs) => {
            for await (const c of fs.createReadStream(a.path)) {
              // Raw bytes, with the terminal's or pipe's backpressure respected.
              if (out.write(c as Buffer) === false && out instanceof EventEmitter) await once(out, 'drain');
            }
          }),
        ),
    )
    .command(
      'get <path> <local>',
      "copy a file out of the disk (a directory's tree with -r)",
      (y) =>
        y
          .positional('path', { type: 'string', demandOption: true })
          .positional('local', { type: 'string', demandOption: true })
          .option('recursive', { alias: 'r', type: 'boolean', default: false }),
      (a) =>
        run(() =>
          withFs(common(a), false, async (fs) => {
            const st = await fs.stat(a.path);
            if (st.type !== 'directory') {
              await pipeline(fs.createReadStream(a.path), progress(st.size, err, a.progress), fsWriteStream(a.local));
              return;
            }
            if (!a.recursive) throw new Error(`get ${a.path}: is a directory (give -r to copy its tree)`);
            const n = await getTree(fs, a.path, a.local);
            err.write(`xenfs: ${n.files} files, ${n.dirs} folders, ${bytes(n.bytes)} copied out\n`);
          }),
        ),
    )
    .command(
      'put <local> <path>',
      "copy a file into the disk (a directory's tree with -r)",
      (y) =>
        y
          .positional('local', { type: 'string', demandOption: true })
          .positional('path', { type: 'string', demandOption: true })
          .option('recursive', { alias: 'r', type: 'boolean', default: false }),
      (a) =>
        run(async () => {
          const st = statSync(a.local);
          if (st.isDirectory() && !a.recursive) throw new Error(`put ${a.local}: is a directory (give -r to copy its tree)`);
          await withFs(common(a), true, async (fs) => {
            if (!st.isDirectory()) {
              await pipeline(
                fsReadStream(a.local, { highWaterMark: 1 << 20 }),
                progress(st.size, err, a.progress),
                fs.createWriteStream(a.path),
              );
              return;
            }
            const n = await putTree(fs, a.local, a.path);
            err.write(`xenfs: ${n.files} files, ${n.dirs} folders, ${bytes(n.bytes)} copied in\n`);
          });
        }),
    )
    .command(
      'mkdir <path>',
      'make a directory',
      (y) =>
        y.positional('path', { type: 'string', demandOption: true }).option('parents', { alias: 'p', type: 'boolean', default: false }),
      (a) => run(() => withFs(common(a), true, (fs) => fs.mkdir(a.path, { recursive: a.parents }))),
    )
    .command(
      'rm <path>',
      'remove a file (a directory with -r)',
      (y) =>
        y.positional('path', { type: 'string', demandOption: true }).option('recursive', { alias: 'r', type: 'boolean', default: false }),
      (a) => run(() => withFs(common(a), true, (fs) => fs.rm(a.path, { recursive: a.recursive }))),
    )
    .command(
      'stat <path>',
      'type, size, mode, blocks, mtime of a path',
      (y) => y.positional('path', { type: 'string', demandOption: true }),
      (a) =>
        run(() =>
          withFs(common(a), false, async (fs) => {
            const s = await fs.lstat(a.path);
            out.write(
              `${JSON.stringify({ path: a.path, ...s, mode: `0${(s.mode & 0o7777).toString(8)}`, mtime: s.mtime.toISOString() })}\n`,
            );
          }),
        ),
    )
    .command(
      'df',
      'size and free space of the file system',
      (y) => y,
      (a) =>
        run(async () => {
          const t = await openTarget(a);
          try {
            const u = await probeExt(t.target);
            const used = (u.blocks - u.freeBlocks) * u.blockSize;
            out.write(
              `${u.kind} ${u.label ? `"${u.label}" ` : ''}${u.uuid}: ${bytes(u.blocks * u.blockSize)}, ${bytes(used)} used, ${bytes(u.freeBlocks * u.blockSize)} free; ` +
                `${u.inodes - u.freeInodes} of ${u.inodes} inodes used; block size ${u.blockSize}\n`,
            );
          } finally {
            await t.close();
          }
        }),
    )
    .command(
      'parts',
      "the disk's partition table",
      (y) => y,
      (a) =>
        run(async () => {
          const t = await openTarget({ ...(a as unknown as Common), partition: undefined });
          try {
            const table = await readPartitionTable(t.device);
            out.write(`${table.kind.toUpperCase()} ${table.id}\n`);
            for (const w of table.warnings) err.write(`xenfs: warning: ${w}\n`);
            for (const p of table.partitions) {
              out.write(
                `${String(p.number).padStart(3)}  start ${String(p.offset).padStart(12)}  size ${bytes(p.size).padStart(10)}  ${p.typeName || p.type}${p.name ? `  "${p.name}"` : ''}\n`,
              );
            }
          } finally {
            await t.close();
          }
        }),
    )
    .command(
      'disks',
      "the guest's virtual disks (with --xen), without connecting to them",
      (y) => y,
      (a) =>
        run(async () => {
          if ((a as unknown as Common).xen !== true) throw new Error("disks lists the real guest's vbds: give --xen");
          const platform = await openXenPlatform();
          try {
            for (const d of await listBlockDevices(platform)) {
              const owner = d.owner === 'kernel' ? 'kernel' : d.owner === 'process' ? `pid ${d.ownerPid ?? '?'}` : 'free';
              out.write(
                `${d.name.padEnd(6)} vdev ${d.vdev}  ${d.size === null ? 'size unknown' : bytes(d.size)}  ${d.readOnly ? 'ro' : 'rw'}  ` +
                  `owner ${owner}  backend ${d.backend} state ${d.backendState}\n`,
              );
            }
          } finally {
            await platform.close();
          }
        }),
    )
    .demandCommand(1, 'give a command: ls, cat, get, put, mkdir, rm, stat, df, parts, disks')
    .strict()
    .example('$0 --image disk.img ls -l /', "list the root of an image's file system")
    .example('$0 --image disk.img --partition 1 cat /etc/hostname', 'a file of partition 1, to stdout')
    .example('$0 --xen --vdev 51728 put ./report.csv /data/report.csv', "copy into the guest's xvdb")
    .example('$0 --image disk.img get -r /etc ./etc', "copy a folder's tree out")
    .epilog(`vdev names: 51712 ${vdevName(51712).name}, 51728 ${vdevName(51728).name}, 51744 ${vdevName(51744).name}`)
    .fail((msg, e) => {
      // Only parsing and validation reach here: the commands report their own failures.
      err.write(`xenfs: ${msg ?? e?.message}\nTry 'xenfs --help'.\n`);
      status = 2;
    })
    .exitProcess(false)
    .wrap(Math.min(110, process.stdout.columns ?? 100));
  await parser.parseAsync();
  return status;
}
