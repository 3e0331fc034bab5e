/**
 * ext2/3/4 file systems on a {@link BlockTarget} (a virtual disk or one of
 * its partitions), through libext2fs compiled to WebAssembly (the `ext2fs`
 * package), read-write, with no kernel and no mount.
 *
 * The library is used only where it has been checked here, and guarded
 * where it is weak:
 * - its `readFile` decodes the file as UTF-8 by default (a binary file comes
 *   back shorter); files are read here through a descriptor, in chunks, and
 *   the length checked against the inode's size;
 * - its `write` ignores a buffer offset; chunks are always given from 0;
 * - its calls share one WebAssembly instance and global state between
 *   concurrent operations, so every operation of every mount runs through
 *   one queue here, one at a time;
 * - its `FileHandle.close` does not wait; descriptors are closed here with
 *   the descriptor call, awaited.
 */
import { ext2fs, type Ext2Fs, type Ext2Promises } from './ext2fs.js';
import { Readable, Writable } from 'node:stream';
import { FsError, asError, isXenError } from '../errors.js';
import type { BlockTarget } from '../blkfront/target.js';
import { readSuperblock, usageOf, type FsUsage } from './superblock.js';
import { ERRNO, normalize, statOf, subject, type DirEntry, type FileStat } from './types.js';
import { SerialQueue } from '../util/serial.js';
import { DiskAdapter, type AdapterOptions, type AdapterStats } from './adapter.js';

/** One queue for the one WebAssembly instance every mount shares. */
const lib = new SerialQueue(() => undefined);

const CHUNK = 1 << 20;

export interface MountOptions extends AdapterOptions {
  /** Refuse every change (FS_EROFS); forced on a read-only disk. */
  readOnly?: boolean;
}

/**
 * Mounts the ext2/3/4 file system on `target`: FS_ENOFS when there is none
 * (no superblock magic) or libext2fs refuses it. Unmount with
 * {@link ExtFileSystem.unmount}, which writes the metadata back and
 * flushes the disk.
 */
export async function mountExt(target: BlockTarget, opts: MountOptions = {}): Promise<ExtFileSystem> {
  const sb = await readSuperblock(target);
  if (sb === null) throw new FsError('FS_ENOFS', 'no ext2/3/4 file system found (no superblock magic at byte 1080)');
  const readOnly = opts.readOnly === true || target.readOnly;
  const adapter = new DiskAdapter(target, readOnly, opts);
  let fs: Ext2Fs;
  try {
    fs = await lib.run(() => ext2fs.mount(adapter));
  } catch (err) {
    throw new FsError('FS_ENOFS', `libext2fs could not open the file system: ${describe(err, adapter)}`, {
      cause: adapter.lastError ?? err,
    });
  }
  return new ExtFileSystem(fs, adapter, target, readOnly, usageOf(sb));
}

function describe(err: unknown, adapter: DiskAdapter): string {
  const dev = adapter.lastError;
  const msg = err instanceof Error ? err.message.split('\n')[0]! : String(err);
  return dev instanceof Error ? `${msg} (device: ${dev.message})` : msg;
}

/** A mounted ext2/3/4 file system. Paths are absolute ("/etc/hostname"). */
export class ExtFileSystem {
  private closed = false;

  /** @internal See {@link mountExt}. */
  constructor(
    private readonly fs: Ext2Fs,
    private readonly adapter: DiskAdapter,
    /** The disk or partition it lives on. */
    readonly target: BlockTarget,
    /** True when mounted read-only (asked for, or the disk is). */
    readonly readOnly: boolean,
    private readonly mounted: FsUsage,
  ) {}

  /** What the adapter did: reads, writes, readahead hits. */
  stats(): AdapterStats {
    return { ...this.adapter.counts };
  }

  private op<T>(what: string, path: string | undefined, fn: (p: Ext2Promises) => Promise<T>, mutates = false): Promise<T> {
    if (this.closed) return Promise.reject(new FsError('FS_CLOSED', `${what}: the file system is unmounted`, { path }));
    if (mutates && this.readOnly)
      return Promise.reject(new FsError('FS_EROFS', `${subject(what, path)}: the file system is mounted read-only`, { path }));
    this.adapter.lastError = null;
    return lib
      .run(() => fn(this.fs.promises))
      .catch((err: unknown) => {
        throw this.wrap(err, what, path);
      });
  }

  private wrap(err: unknown, what: string, path: string | undefined): FsError {
    if (err instanceof FsError) return err;
    const dev = this.adapter.lastError;
    if (dev !== null) {
      // The device failed under the library: say so, with the device's own typed error as the cause.
      const devCode = isXenError(dev) ? ` [${dev.code}]` : '';
      return new FsError('FS_EIO', `${subject(what, path)}: the disk failed${devCode}: ${asError(dev).message}`, { path, cause: dev });
    }
    const code = (err as { code?: unknown } | null)?.code;
    const known = typeof code === 'string' ? ERRNO[code] : undefined;
    const name = typeof code === 'string' ? code : 'EIO';
    return new FsError(known?.[0] ?? 'FS_EIO', `${subject(what, path)}: ${known?.[1] ?? name}`, { path, cause: err });
  }

  /** Names in a directory (without "." and ".."). */
  async readdir(path: string): Promise<string[]> {
    const p = normalize(path);
    const names = await this.op('readdir', p, (fs) => fs.readdir(p));
    return names.filter((n) => n !== '.' && n !== '..');
  }

  /** A directory's entries with their stats, sorted by name. */
  async list(path: string): Promise<DirEntry[]> {
    const p = normalize(path);
    const names = await this.readdir(p);
    const out: DirEntry[] = [];
    for (const name of names.sort()) out.push({ name, ...(await this.lstat(`${p === '/' ? '' : p}/${name}`)) });
    return out;
  }

  /** Stat, following a final symlink. */
  async stat(path: string): Promise<FileStat> {
    const p = normalize(path);
    return statOf(await this.op('stat', p, (fs) => fs.stat(p)));
  }

  /** Stat of the link itself. */
  async lstat(path: string): Promise<FileStat> {
    const p = normalize(path);
    return statOf(await this.op('stat', p, (fs) => fs.lstat(p)));
  }

  /** Whether the path exists. */
  async exists(path: string): Promise<boolean> {
    try {
      await this.lstat(path);
      return true;
    } catch (err) {
      if (isXenError(err, 'FS_ENOENT') || isXenError(err, 'FS_ENOTDIR')) return false;
      throw err;
    }
  }

  /** A symlink's target. */
  async readlink(path: string): Promise<string> {
    const p = normalize(path);
    return this.op('readlink', p, (fs) => fs.readlink(p));
  }

  /** A file's bytes (FS_EISDIR for a directory); the length is checked against the inode's size. */
  async readFile(path: string): Promise<Buffer> {
    const p = normalize(path);
    const { fd, size } = await this.openForRead(p);
    try {
      const out = Buffer.allocUnsafe(size);
      let pos = 0;
      while (pos < size) {
        const want = Math.min(CHUNK, size - pos);
        // Read into a view of the result: no chunk list, no second copy.
        const view = out.subarray(pos, pos + want);
        const { bytesRead } = await this.op('read', p, (fs) => fs.read(fd, view, 0, want, pos));
        if (bytesRead <= 0) throw new FsError('FS_EIO', `read ${p}: the file ended at byte ${pos}, before its size (${size})`, { path: p });
        pos += bytesRead;
      }
      return out;
    } finally {
      await this.closeFd(fd, p);
    }
  }

  /** Opens a regular file for reading: its descriptor and size (FS_EISDIR for a directory). */
  private async openForRead(p: string): Promise<{ fd: number; size: number }> {
    const fd = await this.open(p, 'r');
    try {
      const st = statOf(await this.op('stat', p, (fs) => fs.fstat(fd)));
      if (st.type === 'directory') throw new FsError('FS_EISDIR', `read ${p}: is a directory`, { path: p });
      return { fd, size: st.size };
    } catch (err) {
      await this.closeFd(fd, p).catch(() => undefined);
      throw err;
    }
  }

  /** Writes a whole file (created, or truncated first). */
  async writeFile(path: string, data: Uint8Array | string, opts: { mode?: number } = {}): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    const p = normalize(path);
    const fd = await this.open(p, 'w', opts.mode ?? 0o644);
    try {
      for (let at = 0; at < buf.byteLength; at += CHUNK)
        await this.writeAt(fd, p, buf.subarray(at, Math.min(at + CHUNK, buf.byteLength)), at);
    } finally {
      await this.closeFd(fd, p);
    }
  }

  private async open(p: string, flags: string, mode = 0o644): Promise<number> {
    const mutates = flags !== 'r';
    const h = await this.op('open', p, (fs) => fs.open(p, flags, mode), mutates);
    return h.fd;
  }

  private closeFd(fd: number, p: string): Promise<void> {
    return this.op('close', p, (fs) => fs.close(fd));
  }

  private async writeAt(fd: number, p: string, data: Uint8Array, position: number): Promise<void> {
    // The library copies from offset 0 of the buffer it is given, whatever offset it is told.
    const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let done = 0;
    while (done < b.length) {
      const part = done === 0 ? b : b.subarray(done);
      const { bytesWritten } = await this.op('write', p, (fs) => fs.write(fd, part, 0, part.length, position + done), true);
      if (bytesWritten <= 0) throw new FsError('FS_EIO', `write ${p}: the library wrote nothing`, { path: p });
      done += bytesWritten;
    }
  }

  /** Creates a directory; with `recursive`, its parents too, and no error if it exists. */
  async mkdir(path: string, opts: { recursive?: boolean; mode?: number } = {}): Promise<void> {
    const p = normalize(path);
    if (opts.recursive === true) {
      const parts = p.split('/').filter(Boolean);
      for (let i = 1; i <= parts.length; i++) {
        const sub = '/' + parts.slice(0, i).join('/');
        const st = await this.lstat(sub).catch((err: unknown) => {
          if (isXenError(err, 'FS_ENOENT')) return null;
          throw err;
        });
        if (st === null) await this.op('mkdir', sub, (fs) => fs.mkdir(sub, opts.mode ?? 0o755), true);
        else if (st.type !== 'directory') throw new FsError('FS_ENOTDIR', `mkdir ${sub}: not a directory`, { path: sub });
      }
      return;
    }
    // libext2fs answers an existing name with its own error number, not EEXIST: look first.
    if (this.readOnly) throw new FsError('FS_EROFS', `mkdir ${p}: the file system is mounted read-only`, { path: p });
    if (await this.exists(p)) throw new FsError('FS_EEXIST', `mkdir ${p}: already exists`, { path: p });
    await this.op('mkdir', p, (fs) => fs.mkdir(p, opts.mode ?? 0o755), true);
  }

  /** Removes a file or symlink. */
  unlink(path: string): Promise<void> {
    const p = normalize(path);
    return this.op('unlink', p, (fs) => fs.unlink(p), true);
  }

  /** Removes an empty directory. */
  rmdir(path: string): Promise<void> {
    const p = normalize(path);
    return this.op('rmdir', p, (fs) => fs.rmdir(p), true);
  }

  /** Removes a file, or a directory with `recursive`. */
  async rm(path: string, opts: { recursive?: boolean } = {}): Promise<void> {
    const p = normalize(path);
    if (p === '/') throw new FsError('FS_EINVAL', 'rm: refusing to remove /', { path: p });
    const st = await this.lstat(p);
    if (st.type !== 'directory') return this.unlink(p);
    if (opts.recursive !== true) throw new FsError('FS_EISDIR', `rm ${p}: is a directory`, { path: p });
    for (const name of await this.readdir(p)) await this.rm(`${p}/${name}`, opts);
    await this.rmdir(p);
  }

  rename(from: string, to: string): Promise<void> {
    const a = normalize(from);
    const b = normalize(to);
    return this.op('rename', a, (fs) => fs.rename(a, b), true);
  }

  symlink(target: string, path: string): Promise<void> {
    const p = normalize(path);
    return this.op('symlink', p, (fs) => fs.symlink(target, p), true);
  }

  /**
   * A stream's destroy: closes its descriptor (when it has one), then calls
   * back with the stream's error, or the close's when `closeErrors` and the
   * stream had none.
   */
  private closeOnDestroy(fd: number, path: string, err: Error | null, cb: (e: Error | null) => void, closeErrors: boolean): void {
    if (fd < 0) return cb(err);
    this.closeFd(fd, path).then(
      () => cb(err),
      (e: unknown) => cb(err ?? (closeErrors ? asError(e) : null)),
    );
  }

  /**
   * A Readable of a file's bytes, read `chunkSize` at a time through a
   * descriptor (the descriptor is closed at the end, on error and on
   * destroy). Fails with FS_EIO if the file ends before its size says.
   */
  createReadStream(path: string, opts: { chunkSize?: number; start?: number; end?: number } = {}): Readable {
    const p = normalize(path);
    const chunk = opts.chunkSize ?? CHUNK;
    let fd = -1;
    let pos = opts.start ?? 0;
    let stop = Infinity;
    const self = this;
    return new Readable({
      highWaterMark: chunk,
      construct(cb) {
        self.openForRead(p).then(
          (r) => {
            fd = r.fd;
            stop = Math.min(r.size, opts.end === undefined ? Infinity : opts.end + 1);
            cb();
          },
          (err: unknown) => cb(err as Error),
        );
      },
      read() {
        if (pos >= stop) {
          this.push(null);
          return;
        }
        const want = Math.min(chunk, stop - pos);
        const buf = Buffer.allocUnsafe(want);
        self
          .op('read', p, (fs) => fs.read(fd, buf, 0, want, pos))
          .then(({ bytesRead }) => {
            if (bytesRead <= 0)
              throw new FsError('FS_EIO', `read ${p}: the file ended at byte ${pos}, before its size (${stop})`, { path: p });
            pos += bytesRead;
            this.push(bytesRead === want ? buf : buf.subarray(0, bytesRead));
          })
          .catch((err: unknown) => this.destroy(err as Error));
      },
      destroy(err, cb) {
        const f = fd;
        fd = -1;
        self.closeOnDestroy(f, p, err, cb, true);
      },
    });
  }

  /**
   * A Writable into a file (created, or truncated first), written as it
   * comes; the descriptor is closed (and the inode written) before 'finish'.
   */
  createWriteStream(path: string, opts: { mode?: number } = {}): Writable {
    const p = normalize(path);
    let fd = -1;
    let pos = 0;
    const self = this;
    return new Writable({
      highWaterMark: CHUNK,
      construct(cb) {
        self.open(p, 'w', opts.mode ?? 0o644).then(
          (f) => {
            fd = f;
            cb();
          },
          (err: unknown) => cb(err as Error),
        );
      },
      write(data: Buffer, _enc, cb) {
        self.writeAt(fd, p, data, pos).then(
          () => {
            pos += data.length;
            cb();
          },
          (err: unknown) => cb(err as Error),
        );
      },
      final(cb) {
        const f = fd;
        fd = -1;
        self.closeFd(f, p).then(
          () => cb(),
          (err: unknown) => cb(err as Error),
        );
      },
      destroy(err, cb) {
        const f = fd;
        fd = -1;
        self.closeOnDestroy(f, p, err, cb, false);
      },
    });
  }

  /**
   * Space and inodes, from the superblock on the disk (the library writes
   * its counts back on unmount: until then these are the counts at mount).
   */
  async usage(): Promise<FsUsage> {
    if (this.closed) throw new FsError('FS_CLOSED', 'usage: the file system is unmounted');
    const sb = await readSuperblock(this.target);
    return sb === null ? this.mounted : usageOf(sb);
  }

  /**
   * Closes what is open, writes the metadata back, flushes the disk.
   * Further calls fail with FS_CLOSED. The disk itself stays open.
   */
  async unmount(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.adapter.lastError = null;
    try {
      await lib.run(() => ext2fs.umount(this.fs));
    } catch (err) {
      throw this.wrap(err, 'unmount', undefined);
    }
    if (this.adapter.lastError !== null) throw this.wrap(this.adapter.lastError, 'unmount', undefined);
    await this.adapter.flush().catch((err: unknown) => {
      throw this.wrap(err, 'unmount (flush)', undefined);
    });
  }
}
