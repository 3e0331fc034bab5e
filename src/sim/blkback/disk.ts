/**
 * The storage behind a simulated blkback: a file (the usual `phy:`/`file:`
 * target) or memory shared by every queue's worker. Described by a
 * structured-cloneable {@link DiskSpec} so each worker opens its own handle.
 */
import { closeSync, fdatasyncSync, openSync, readSync, readvSync, writeSync, writevSync } from 'node:fs';

export type DiskSpec =
  | { readonly kind: 'memory'; readonly buffer: SharedArrayBuffer }
  | { readonly kind: 'file'; readonly path: string; readonly readOnly: boolean };

/** Byte-addressed I/O on the disk; positions and lengths are checked by the caller. */
export interface DiskIo {
  read(pos: number, dst: Uint8Array): void;
  write(pos: number, src: Uint8Array): void;
  /**
   * Reads into `n` buffers in turn from `pos`, as one operation (preadv for
   * a file: a request's segments cost one system call, as a bio does).
   */
  readv(pos: number, dst: Uint8Array[], n: number): void;
  /** Writes `n` buffers in turn from `pos`, as one operation (pwritev). */
  writev(pos: number, src: Uint8Array[], n: number): void;
  /** Makes completed writes durable (fdatasync for a file). */
  flush(): void;
  /** Forgets a range: reads of it return zeros afterwards. */
  discard(pos: number, len: number): void;
  close(): void;
}

const ZEROS = new Uint8Array(1 << 20);

/** Carries on a vectored transfer that stopped after `done` bytes, one buffer at a time. */
function finish(done: number, pos: number, bufs: Uint8Array[], n: number, one: (pos: number, b: Uint8Array) => void): void {
  let at = 0;
  for (let i = 0; i < n; i++) {
    const b = bufs[i]!;
    const end = at + b.byteLength;
    if (end > done) one(pos + Math.max(done, at), b.subarray(Math.max(0, done - at)));
    at = end;
  }
}

export function openDisk(spec: DiskSpec): DiskIo {
  if (spec.kind === 'memory') {
    const mem = new Uint8Array(spec.buffer);
    return {
      read: (pos, dst) => dst.set(mem.subarray(pos, pos + dst.byteLength)),
      write: (pos, src) => mem.set(src, pos),
      readv: (pos, dst, n) => {
        for (let i = 0; i < n; i++) {
          const d = dst[i]!;
          d.set(mem.subarray(pos, pos + d.byteLength));
          pos += d.byteLength;
        }
      },
      writev: (pos, src, n) => {
        for (let i = 0; i < n; i++) {
          mem.set(src[i]!, pos);
          pos += src[i]!.byteLength;
        }
      },
      flush: () => undefined,
      discard: (pos, len) => mem.fill(0, pos, pos + len),
      close: () => undefined,
    };
  }
  const fd = openSync(spec.path, spec.readOnly ? 'r' : 'r+');
  const read = (pos: number, dst: Uint8Array): void => {
    let done = 0;
    while (done < dst.byteLength) {
      const n = readSync(fd, dst, done, dst.byteLength - done, pos + done);
      if (n === 0) {
        dst.fill(0, done);
        return;
      } // past EOF of a sparse image reads as zeros
      done += n;
    }
  };
  const write = (pos: number, src: Uint8Array): void => {
    let done = 0;
    while (done < src.byteLength) done += writeSync(fd, src, done, src.byteLength - done, pos + done);
  };
  const readvAt = (l: Uint8Array[], pos: number): number => readvSync(fd, l, pos);
  const writevAt = (l: Uint8Array[], pos: number): number => writevSync(fd, l, pos);
  // Node's readvSync takes a whole array: keep one per length so a request allocates none.
  const lists: Uint8Array[][] = [];
  const list = (bufs: Uint8Array[], n: number): Uint8Array[] => {
    if (n === bufs.length) return bufs;
    const l = (lists[n] ??= new Array<Uint8Array>(n));
    for (let i = 0; i < n; i++) l[i] = bufs[i]!;
    return l;
  };
  /** One preadv/pwritev for `n` buffers; a short transfer is finished buffer by buffer with `one`. */
  type Vec = (l: Uint8Array[], pos: number) => number;
  const vectored = (pos: number, bufs: Uint8Array[], n: number, one: (pos: number, b: Uint8Array) => void, all: Vec): void => {
    if (n === 1) return one(pos, bufs[0]!);
    let total = 0;
    for (let i = 0; i < n; i++) total += bufs[i]!.byteLength;
    const done = all(list(bufs, n), pos);
    if (done < total) finish(done, pos, bufs, n, one);
  };
  return {
    read,
    write,
    readv: (pos, dst, n) => vectored(pos, dst, n, read, readvAt),
    writev: (pos, src, n) => vectored(pos, src, n, write, writevAt),
    flush: () => fdatasyncSync(fd),
    discard: (pos, len) => {
      // Node has no fallocate(PUNCH_HOLE); zeroing gives the same reads back.
      for (let off = 0; off < len; off += ZEROS.byteLength) {
        const n = Math.min(ZEROS.byteLength, len - off);
        let done = 0;
        while (done < n) done += writeSync(fd, ZEROS, done, n - done, pos + off + done);
      }
    },
    close: () => closeSync(fd),
  };
}
