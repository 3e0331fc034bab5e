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
 *   the descriptor call, awaited;
 * - it writes the bitmaps, group descriptors and superblock only when the
 *   file system is closed (it exports no flush): {@link ExtFileSystem.sync}
 *   closes and opens it again, and opens again what was open.
 *
 * The superblock's health record is kept as fuse2fs keeps it (health.ts):
 * a read-write mount marks the file system not clean until a clean unmount,
 * and one whose journal needs recovery, or with errors recorded, is not
 * written.
 */
import { ext2fs, type Ext2Fs, type Ext2Promises } from './ext2fs.js';
import { Readable, Writable } from 'node:stream';
import { FsError, asError, isXenError } from '../errors.js';
import type { BlockTarget } from '../blkfront/target.js';
import { readSuperblock, usageOf, type FsUsage } from './superblock.js';
import { admit, conditionOf, markMounted, markUnmounted, superblockSealed, writeSuperblock } from './health.js';
import { ERRNO, normalize, statOf, subject, type DirEntry, type FileStat } from './types.js';
import { SerialQueue } from '../util/serial.js';
import { DiskAdapter, type AdapterOptions, type AdapterStats } from './adapter.js';

/** One queue for the one WebAssembly instance every mount shares. */
const lib = new SerialQueue(() => undefined);

const CHUNK = 1 << 20;

export interface MountOptions extends AdapterOptions {
  /** Refuse every change (FS_EROFS); forced on a read-only disk. */
  readOnly?: boolean;
  /** Mount read-write even though errors are recorded in the file system (a journal needing recovery is refused still). */
  force?: boolean;
}

/**
 * Mounts the ext2/3/4 file system on `target`: FS_ENOFS when there is none
 * (no superblock magic) or libext2fs refuses it. Read-write, FS_EDIRTY when
 * its journal needs recovery, or errors are recorded in it (unless
 * `force`); otherwise it is marked not clean on the disk (and the mount
 * counted) before anything is written, until {@link ExtFileSystem.unmount}
 * writes the metadata back, marks it clean and flushes the disk. What a
 * careful user should know (an unchecked file system, a journal not
 * replayed on a read-only mount) is in {@link ExtFileSystem.warnings}.
 */
export async function mountExt(target: BlockTarget, opts: MountOptions = {}): Promise<ExtFileSystem> {
  const sb = await readSuperblock(target);
  if (sb === null) throw new FsError('FS_ENOFS', 'no ext2/3/4 file system found (no superblock magic at byte 1080)');
  const readOnly = opts.readOnly === true || target.readOnly;
  const condition = conditionOf(sb);
  const warnings = admit(condition, readOnly, opts.force === true);
  if (!readOnly && !superblockSealed(sb)) {
    // Rewriting it would seal whatever is there: a torn or foreign superblock is e2fsck's to judge.
    throw new FsError('FS_EDIRTY', 'the superblock checksum does not match its contents: run e2fsck -fy on it, or mount it read-only');
  }
  const before = new Uint8Array(new Uint8Array(sb.buffer, sb.byteOffset, sb.byteLength));
  if (!readOnly) {
    markMounted(sb);
    await writeSuperblock(target, sb).catch((err: unknown) => {
      throw new FsError('FS_EIO', `mount: could not mark the file system mounted: ${asError(err).message}`, { cause: err });
    });
  }
  const adapter = new DiskAdapter(target, readOnly, opts);
  let fs: Ext2Fs;
  try {
    fs = await lib.run(() => ext2fs.mount(adapter));
  } catch (err) {
    await adapter.close();
    // Nothing was written through the library: the superblock goes back as it was.
    if (!readOnly) await writeSuperblock(target, new DataView(before.buffer)).catch(() => undefined);
    throw new FsError('FS_ENOFS', `libext2fs could not open the file system: ${describe(err, adapter)}`, {
      cause: adapter.lastError ?? err,
    });
  }
  return new ExtFileSystem(fs, adapter, target, readOnly, usageOf(sb), warnings, condition.valid);
}

/**
 * A descriptor of the library's, as this layer hands it around: what was
 * opened, so that a {@link ExtFileSystem.sync} (which closes and opens the
 * file system again) can open it again where it was.
 */
interface OpenFile {
  fd: number;
  path: string;
  /** Flags to open it again with (a file opened to be written is not truncated a second time). */
  reopen: string;
  /** Why it can no longer be used, once a sync could not open it again. */
  lost: FsError | null;
}

/** The library's descriptor of an open file now (a sync gives it a new one), or why it has none. */
function fdOf(file: OpenFile): number {
  if (file.lost !== null) throw file.lost;
  return file.fd;
}

function describe(err: unknown, adapter: DiskAdapter): string {
  const dev = adapter.lastError;
  const msg = err instanceof Error ? err.message.split('\n')[0]! : String(err);
  return dev instanceof Error ? `${msg} (device: ${dev.message})` : msg;
}

/** A mounted ext2/3/4 file system. Paths are absolute ("/etc/hostname"). */
export class ExtFileSystem {
  private closed = false;
  private readonly openFiles = new Set<OpenFile>();
  /** Failures of the disk under a change: recorded in the superblock's error fields at unmount. */
  private errors = 0;

  /** @internal See {@link mountExt}. */
  constructor(
    private fs: Ext2Fs,
    private readonly adapter: DiskAdapter,
    /** The disk or partition it lives on. */
    readonly target: BlockTarget,
    /** True when mounted read-only (asked for, or the disk is). */
    readonly readOnly: boolean,
    private readonly mounted: FsUsage,
    /**
     * What the superblock said at mount that a careful user should know:
     * not unmounted cleanly, a journal not replayed (read-only), errors
     * recorded (forced), a check due, orphans. Empty for a clean file system.
     */
    readonly warnings: readonly string[] = [],
    private readonly validAtMount = true,
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
        const e = this.wrap(err, what, path);
        // The disk failed under a change: what the library holds may not be what the disk has.
        if (mutates && e.code === 'FS_EIO' && this.adapter.lastError !== null) this.errors++;
        throw e;
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
    const { file, size } = await this.openForRead(p);
    try {
      const out = Buffer.allocUnsafe(size);
      let pos = 0;
      while (pos < size) {
        const want = Math.min(CHUNK, size - pos);
        // Read into a view of the result: no chunk list, no second copy.
        const view = out.subarray(pos, pos + want);
        const { bytesRead } = await this.op('read', p, (fs) => fs.read(fdOf(file), view, 0, want, pos));
        if (bytesRead <= 0) throw new FsError('FS_EIO', `read ${p}: the file ended at byte ${pos}, before its size (${size})`, { path: p });
        pos += bytesRead;
      }
      return out;
    } finally {
      await this.closeFd(file, p);
    }
  }

  /** Opens a regular file for reading: its descriptor and size (FS_EISDIR for a directory). */
  private async openForRead(p: string): Promise<{ file: OpenFile; size: number }> {
    const file = await this.open(p, 'r');
    try {
      const st = statOf(await this.op('stat', p, (fs) => fs.fstat(fdOf(file))));
      if (st.type === 'directory') throw new FsError('FS_EISDIR', `read ${p}: is a directory`, { path: p });
      return { file, size: st.size };
    } catch (err) {
      await this.closeFd(file, p).catch(() => undefined);
      throw err;
    }
  }

  /**
   * Writes a whole file (created, or truncated first). When it resolves the
   * data and the inode are on the disk, but the allocation bitmaps and
   * counts may be only in memory until {@link sync} or unmount: with
   * `sync: true` it syncs the file system before resolving, and the file
   * survives a crash from then on.
   */
  async writeFile(path: string, data: Uint8Array | string, opts: { mode?: number; sync?: boolean } = {}): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data) : data;
    const p = normalize(path);
    const file = await this.open(p, 'w', opts.mode ?? 0o644);
    try {
      for (let at = 0; at < buf.byteLength; at += CHUNK)
        await this.writeAt(file, p, buf.subarray(at, Math.min(at + CHUNK, buf.byteLength)), at);
    } finally {
      await this.closeFd(file, p);
    }
    if (opts.sync === true) await this.sync();
  }

  private async open(p: string, flags: string, mode = 0o644): Promise<OpenFile> {
    const mutates = flags !== 'r';
    const h = await this.op('open', p, (fs) => fs.open(p, flags, mode), mutates);
    const file: OpenFile = { fd: h.fd, path: p, reopen: mutates ? 'r+' : 'r', lost: null };
    this.openFiles.add(file);
    return file;
  }

  private closeFd(file: OpenFile, p: string): Promise<void> {
    this.openFiles.delete(file);
    // A descriptor a sync could not open again has nothing left to close.
    if (file.lost !== null) return Promise.resolve();
    return this.op('close', p, (fs) => fs.close(file.fd));
  }

  private async writeAt(file: OpenFile, p: string, data: Uint8Array, position: number): Promise<void> {
    // The library copies from offset 0 of the buffer it is given, whatever offset it is told.
    const b = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    let done = 0;
    while (done < b.length) {
      const part = done === 0 ? b : b.subarray(done);
      const { bytesWritten } = await this.op('write', p, (fs) => fs.write(fdOf(file), part, 0, part.length, position + done), true);
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

  async rename(from: string, to: string): Promise<void> {
    const a = normalize(from);
    const b = normalize(to);
    await this.op('rename', a, (fs) => fs.rename(a, b), true);
    // What is open under the old name is opened again under the new one by a sync.
    for (const f of this.openFiles) {
      if (f.path === a || f.path.startsWith(a + '/')) f.path = b + f.path.slice(a.length);
    }
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
  private closeOnDestroy(
    file: OpenFile | null,
    path: string,
    err: Error | null,
    cb: (e: Error | null) => void,
    closeErrors: boolean,
  ): void {
    if (file === null) return cb(err);
    this.closeFd(file, path).then(
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
    let file: OpenFile | null = null;
    let pos = opts.start ?? 0;
    let stop = Infinity;
    const self = this;
    return new Readable({
      highWaterMark: chunk,
      construct(cb) {
        self.openForRead(p).then(
          (r) => {
            file = r.file;
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
          .op('read', p, (fs) => fs.read(fdOf(file!), buf, 0, want, pos))
          .then(({ bytesRead }) => {
            if (bytesRead <= 0)
              throw new FsError('FS_EIO', `read ${p}: the file ended at byte ${pos}, before its size (${stop})`, { path: p });
            pos += bytesRead;
            this.push(bytesRead === want ? buf : buf.subarray(0, bytesRead));
          })
          .catch((err: unknown) => this.destroy(err as Error));
      },
      destroy(err, cb) {
        const f = file;
        file = null;
        self.closeOnDestroy(f, p, err, cb, true);
      },
    });
  }

  /**
   * A Writable into a file (created, or truncated first), written as it
   * comes; the descriptor is closed (and the inode written) before 'finish',
   * and with `sync: true` the file system is synced too, so that 'finish'
   * means the file survives a crash.
   */
  createWriteStream(path: string, opts: { mode?: number; sync?: boolean } = {}): Writable {
    const p = normalize(path);
    let file: OpenFile | null = null;
    let pos = 0;
    const self = this;
    return new Writable({
      highWaterMark: CHUNK,
      construct(cb) {
        self.open(p, 'w', opts.mode ?? 0o644).then(
          (f) => {
            file = f;
            cb();
          },
          (err: unknown) => cb(err as Error),
        );
      },
      write(data: Buffer, _enc, cb) {
        self.writeAt(file!, p, data, pos).then(
          () => {
            pos += data.length;
            cb();
          },
          (err: unknown) => cb(err as Error),
        );
      },
      final(cb) {
        const f = file!;
        file = null;
        self
          .closeFd(f, p)
          .then(() => (opts.sync === true ? self.sync() : undefined))
          .then(
            () => cb(),
            (err: unknown) => cb(err as Error),
          );
      },
      destroy(err, cb) {
        const f = file;
        file = null;
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
   * Makes everything written so far durable: closes the file system in the
   * library (which writes the inodes of open files, the allocation bitmaps,
   * the group descriptors and the superblock), flushes the disk, and opens
   * it again, with what was open opened again where it was. A file system
   * mounted read-only has nothing to sync. Costs a mount: call it at the
   * points a crash must not undo, not after every write.
   */
  async sync(): Promise<void> {
    if (this.closed) throw new FsError('FS_CLOSED', 'sync: the file system is unmounted');
    if (this.readOnly) return;
    this.adapter.lastError = null;
    await lib
      .run(() => this.reopen())
      .catch((err: unknown) => {
        const e = this.wrap(err, 'sync', undefined);
        if (this.adapter.lastError !== null) this.errors++;
        throw e;
      });
  }

  /** sync's work, in the library's queue: nothing else runs between the close and the open. */
  private async reopen(): Promise<void> {
    try {
      await ext2fs.umount(this.fs);
      if (this.adapter.lastError !== null) throw asError(this.adapter.lastError);
    } catch (err) {
      // The library has let go of the file system, written or not: it cannot be used from here on.
      this.closed = true;
      throw err;
    }
    await this.adapter.flush();
    try {
      this.fs = await ext2fs.mount(this.adapter);
    } catch (err) {
      // Everything was written and flushed, but the file system cannot be used from here on.
      this.closed = true;
      throw new FsError(
        'FS_EIO',
        `sync: the file system was written, but libext2fs could not open it again: ${describe(err, this.adapter)}`,
        {
          cause: err,
        },
      );
    }
    for (const f of this.openFiles) {
      if (f.lost !== null) continue;
      try {
        f.fd = (await this.fs.promises.open(f.path, f.reopen)).fd;
      } catch (err) {
        f.lost = new FsError('FS_EIO', `${f.path}: a sync closed it, and it could not be opened again (removed while open?)`, {
          path: f.path,
          cause: err,
        });
      }
    }
  }

  /**
   * Closes what is open, writes the metadata back, flushes the disk, and
   * (read-write) marks the file system clean again, with the state it had
   * at mount and any errors the disk gave under a change recorded. Further
   * calls fail with FS_CLOSED. The disk itself stays open.
   */
  async unmount(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.adapter.lastError = null;
    try {
      await lib.run(() => ext2fs.umount(this.fs));
    } catch (err) {
      throw this.wrap(err, 'unmount', undefined);
    } finally {
      // The library is done with the disk: the cache gives the disk's buffers back.
      await this.adapter.close();
    }
    if (this.adapter.lastError !== null) throw this.wrap(this.adapter.lastError, 'unmount', undefined);
    await this.adapter.flush().catch((err: unknown) => {
      throw this.wrap(err, 'unmount (flush)', undefined);
    });
    if (this.readOnly) return;
    // Only now, with everything else on the disk, may the superblock say the file system is clean.
    const sb = await readSuperblock(this.target).catch((err: unknown) => {
      throw this.wrap(err, 'unmount (superblock)', undefined);
    });
    if (sb === null) throw new FsError('FS_EIO', 'unmount: the superblock is gone from the disk');
    markUnmounted(sb, this.validAtMount, this.errors, 'xen-blkfront');
    await writeSuperblock(this.target, sb).catch((err: unknown) => {
      throw this.wrap(err, 'unmount (superblock)', undefined);
    });
  }
}
