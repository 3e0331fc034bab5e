/**
 * What the layers above the ring (partitions, streams, file systems) need of
 * a disk: byte-addressed, sector-aligned I/O with its limits. A
 * {@link BlockDevice} is one; so is a {@link Partition} of it.
 */
export interface BlockTarget {
  /** Size in bytes. */
  readonly size: number;
  /** Offsets and lengths of I/O must be multiples of this. */
  readonly sectorSize: number;
  readonly readOnly: boolean;
  /** Whether {@link discard} is offered. */
  readonly canDiscard: boolean;
  /** Reads `dst.byteLength` bytes at `offset` into `dst`. */
  readInto(offset: number, dst: Uint8Array): Promise<void>;
  /** Writes `data` at `offset`; `data` must stay unchanged until this settles. */
  write(offset: number, data: Uint8Array): Promise<void>;
  /** Makes completed writes durable. */
  flush(): Promise<void>;
  /** Tells the disk the range is unused. */
  discard(offset: number, length: number): Promise<void>;
  /**
   * Memory the disk reads into and writes from in place (granted to the
   * backend once: no bounce copy). Give it back with {@link freeBuffer}.
   */
  allocBuffer(length: number): Uint8Array;
  freeBuffer(buf: Uint8Array): void;
}

/**
 * Reads `dst.byteLength` bytes at byte `offset` of `target`, wherever they
 * fall: an aligned range goes straight into `dst`; any other is read as the
 * whole sectors around it and the bytes wanted copied out.
 */
export async function readRangeInto(target: BlockTarget, offset: number, dst: Uint8Array): Promise<void> {
  const ss = target.sectorSize;
  if (offset % ss === 0 && dst.byteLength % ss === 0) {
    await target.readInto(offset, dst);
    return;
  }
  const start = Math.floor(offset / ss) * ss;
  const end = Math.ceil((offset + dst.byteLength) / ss) * ss;
  const tmp = new Uint8Array(end - start);
  await target.readInto(start, tmp);
  dst.set(tmp.subarray(offset - start, offset - start + dst.byteLength));
}
