/**
 * The storage behind a simulated blkback: a file (the usual `phy:`/`file:`
 * target) or memory shared by every queue's worker. Described by a
 * structured-cloneable {@link DiskSpec} so each worker opens its own handle.
 */
import { closeSync, fdatasyncSync, openSync, readSync, writeSync } from 'node:fs';

export type DiskSpec =
  | { readonly kind: 'memory'; readonly buffer: SharedArrayBuffer }
  | { readonly kind: 'file'; readonly path: string; readonly readOnly: boolean };

/** Byte-addressed I/O on the disk; positions and lengths are checked by the caller. */
export interface DiskIo {
  read(pos: number, dst: Uint8Array): void;
  write(pos: number, src: Uint8Array): void;
  /** Makes completed writes durable (fdatasync for a file). */
  flush(): void;
  /** Forgets a range: reads of it return zeros afterwards. */
  discard(pos: number, len: number): void;
  close(): void;
}

const ZEROS = new Uint8Array(1 << 20);

export function openDisk(spec: DiskSpec): DiskIo {
  if (spec.kind === 'memory') {
    const mem = new Uint8Array(spec.buffer);
    return {
      read: (pos, dst) => dst.set(mem.subarray(pos, pos + dst.byteLength)),
      write: (pos, src) => mem.set(src, pos),
      flush: () => undefined,
      discard: (pos, len) => mem.fill(0, pos, pos + len),
      close: () => undefined,
    };
  }
  const fd = openSync(spec.path, spec.readOnly ? 'r' : 'r+');
  return {
    read: (pos, dst) => {
      let done = 0;
      while (done < dst.byteLength) {
        const n = readSync(fd, dst, done, dst.byteLength - done, pos + done);
        if (n === 0) { dst.fill(0, done); return; } // past EOF of a sparse image reads as zeros
        done += n;
      }
    },
    write: (pos, src) => {
      let done = 0;
      while (done < src.byteLength) done += writeSync(fd, src, done, src.byteLength - done, pos + done);
    },
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
