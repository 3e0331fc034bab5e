/**
 * What the layers above the ring (partitions, streams, file systems) need of
 * a disk: byte-addressed, sector-aligned I/O with its limits. The driver
 * defines it and a {@link BlockDevice} is one; the layers above offer it
 * again (a {@link Partition} of a disk is one too), so they stack.
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
