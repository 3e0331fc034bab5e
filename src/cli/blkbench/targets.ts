/**
 * What blkbench runs on: the driver over the embedded simulated host (a
 * temporary image, an image file, or memory) or over a real Xen guest's
 * platform; and the baseline, Node fs straight on the same image file.
 */
import {
  closeSync,
  existsSync,
  mkdtempSync,
  openSync,
  read,
  rmSync,
  statSync,
  statfsSync,
  accessSync,
  constants,
  write,
  writeSync,
  ftruncateSync,
} from 'node:fs';
import { freemem, tmpdir } from 'node:os';
import { removeOnSignal } from '../common/signals.js';
import { dirname, join } from 'node:path';
import type { BlockDevice, BlockDeviceInfo, BlockDeviceStats, XenPlatform } from '../../index.js';
import type { SimBlkback, SimHost } from '../../sim/index.js';
import { openDisk, type DiskSpec } from '../common/disk.js';
import type { BenchOptions } from './options.js';
import type { EngineCounters, IoEngine } from './run.js';

/** The driver, opened on its target. */
export interface DriverTarget {
  engine: IoEngine;
  device: BlockDevice;
  /** Present on the embedded simulated host. */
  sim: { host: SimHost; disk: SimBlkback } | null;
  /** The image file served, when there is one (the baseline runs on it). */
  image: string | null;
  /** One line saying what this is. */
  describe: string;
  /** gntalloc's limit on a real guest (null on the simulated host). */
  grantLimit: number | null;
  close(): Promise<void>;
}

/** Where temporary images go: /dev/shm when writable, else the system temp dir. */
export function defaultTmpdir(): string {
  // tmpfs keeps both the driver and the baseline off the disk's own latency.
  try {
    accessSync('/dev/shm', constants.W_OK);
    return '/dev/shm';
  } catch {
    return tmpdir();
  }
}

/** Fails before anything is written when an image of `size` bytes cannot fit where it would go. */
export function checkRoom(dir: string, size: number, what: string): void {
  const fs = statfsSync(dir);
  const free = fs.bavail * fs.bsize;
  if (size > free) throw new Error(`${what}: a ${size}-byte image does not fit in ${dir} (${free} bytes free)`);
}

/** Writes `size` bytes of non-zero data, so reads are of real pages, not holes. */
export function layOut(path: string, size: number): void {
  const fd = openSync(path, 'w');
  try {
    const chunk = new Uint8Array(1 << 20);
    const w = new Uint32Array(chunk.buffer);
    let x = 0x2545f491;
    for (let off = 0; off < size; off += chunk.byteLength) {
      for (let i = 0; i < w.length; i++) {
        x ^= x << 13;
        x ^= x >>> 17;
        x ^= x << 5;
        w[i] = x >>> 0;
      }
      const n = Math.min(chunk.byteLength, size - off);
      for (let done = 0; done < n;) done += writeSync(fd, chunk, done, n - done, off + done);
    }
    ftruncateSync(fd, size);
  } finally {
    closeSync(fd);
  }
}

/** blkbench's counters from a device's (or one queue's) stats, and the simulated backend's when there is one. */
export function countersOf(
  s: Pick<BlockDeviceStats, 'requests' | 'notifications' | 'interrupts' | 'responses' | 'polls' | 'pollMisses' | 'pool'> & {
    reconnects?: number;
  },
  b?: { persistentMaps: number; transientMaps: number; unmaps: number },
): EngineCounters {
  return {
    requests: s.requests,
    notifications: s.notifications,
    interrupts: s.interrupts,
    responses: s.responses,
    polls: s.polls,
    pollMisses: s.pollMisses,
    poolHits: s.pool.hits,
    poolFallbacks: s.pool.fallbacks,
    poolWaits: s.pool.waits,
    backendMaps: b === undefined ? null : b.persistentMaps + b.transientMaps,
    backendUnmaps: b === undefined ? null : b.unmaps,
    reconnects: s.reconnects ?? 0,
  };
}

function driverEngine(device: BlockDevice, disk: SimBlkback | null, zeroCopy: boolean): IoEngine {
  return {
    label: 'driver',
    get size() {
      return device.info.size;
    },
    get sectorSize() {
      return device.info.sectorSize;
    },
    read: (offset, buf) => device.readInto(offset, buf),
    write: (offset, buf) => device.write(offset, buf),
    // Device buffers are granted once and used in place; ordinary memory is bounced through the pool.
    buffer: (bytes) => (zeroCopy ? device.allocBuffer(bytes) : new Uint8Array(bytes)),
    counters: () => countersOf(device.stats(), disk?.stats()),
  };
}

export function driverOptions(o: BenchOptions) {
  return {
    queues: o.queues,
    ringPages: o.ringPages,
    maxIndirectSegments: o.indirect ? 256 : 0,
    persistentGrants: o.persistent,
    pool: o.pool,
    pollMicros: o.pollUs,
  };
}

export function featureLine(info: BlockDeviceInfo): string {
  const f = info.features;
  return (
    `${f.queues} queue${f.queues === 1 ? '' : 's'} x ${f.ringPages}-page ring${f.ringPages === 1 ? '' : 's'}, ` +
    `persistent grants ${f.persistentGrants ? 'on' : 'off'}, ` +
    `${f.indirectSegments > 0 ? `${f.indirectSegments} indirect segments` : 'no indirect descriptors'}` +
    (info.trusted ? '' : ', backend untrusted (everything bounced)') +
    (info.takenOver === null
      ? ''
      : `, took over a vbd left ${info.takenOver.state} by ${info.takenOver.pid === null ? 'a killed process' : `killed process ${info.takenOver.pid}`}`)
  );
}

const PAGE = 4096;
/** Where Linux's gntalloc takes its limit; root may write it at any time. */
const GNTALLOC_LIMIT_PATH = '/sys/module/xen_gntalloc/parameters/limit';

/**
 * What the guest's grant limit (gntalloc's `limit`, which caps every user of
 * /dev/xen/gntalloc together) allows, as a line for the report; with
 * --zero-copy, a clear refusal up front when the device buffers cannot all
 * be granted, rather than a failure part-way through.
 */
export function grantRoom(
  platform: Pick<XenPlatform, 'grants'>,
  device: Pick<BlockDevice, 'stats'>,
  o: Pick<BenchOptions, 'zeroCopy' | 'iodepth' | 'bs'>,
): string {
  const limit = platform.grants.limit?.();
  const inUse = platform.grants.stats().sharedPages;
  const pools = device.stats().pool.size;
  const buffers = o.zeroCopy ? o.iodepth * Math.ceil(o.bs / PAGE) : 0;
  if (limit !== undefined && buffers > limit - inUse) {
    throw new Error(
      `--zero-copy: ${o.iodepth} device buffers of ${o.bs} bytes need ${buffers} grant pages, and only ` +
        `${Math.max(0, limit - inUse)} of gntalloc's limit of ${limit} are left (the device's pools hold ${pools}); ` +
        `as root, raise it (echo ${inUse + buffers} > ${GNTALLOC_LIMIT_PATH}) or lower --iodepth`,
    );
  }
  return (
    `grants: gntalloc limit ${limit ?? 'none'}, ${pools} pages in the device's pools` +
    (o.zeroCopy ? `, ${buffers} for device buffers` : '')
  );
}

/** Where the driver runs: the disk to open, the image file served (if any), what to call it, what to remove after. */
export interface PreparedTarget {
  spec: DiskSpec;
  image: string | null;
  describe: string;
  cleanup(): void;
}

/** Lays out the temporary or named image the options ask for (nothing to do for a vbd or a memory disk). */
export function prepareTarget(o: BenchOptions): PreparedTarget {
  const t = o.target;
  if (t.kind === 'xen')
    return { spec: { kind: 'xen', vdev: t.vdev, wakeup: o.wakeup }, image: null, describe: `Xen vbd ${t.vdev}`, cleanup: () => undefined };
  if (t.kind === 'ramdisk') {
    if (t.size > freemem()) throw new Error(`--ramdisk: ${t.size} bytes is more than the ${freemem()} bytes of memory free`);
    return { spec: { kind: 'ramdisk', size: t.size }, image: null, describe: 'simulated host, memory disk', cleanup: () => undefined };
  }
  if (t.kind === 'temp') {
    const parent = t.dir ?? defaultTmpdir();
    checkRoom(parent, t.size, '--offset and --size');
    const dir = mkdtempSync(join(parent, 'blkbench-'));
    // Interrupted (Ctrl-C, kill), the run would otherwise leave the image in /dev/shm's memory.
    const unwatch = removeOnSignal(dir);
    const cleanup = (): void => {
      unwatch();
      rmSync(dir, { recursive: true, force: true });
    };
    const image = join(dir, 'disk.img');
    try {
      layOut(image, t.size);
    } catch (err) {
      cleanup();
      throw err;
    }
    return { spec: { kind: 'image', path: image }, image, describe: `simulated host, temporary image ${image}`, cleanup };
  }
  const image = t.path;
  if (!existsSync(image)) {
    if (t.size === undefined) throw new Error(`--image ${image}: no such file (give --size to create it)`);
    const size = Math.ceil(t.size / 4096) * 4096;
    checkRoom(dirname(image), size, '--size');
    try {
      layOut(image, size);
    } catch (err) {
      rmSync(image, { force: true });
      throw err;
    }
  } else if (!statSync(image).isFile()) {
    throw new Error(`--image ${image}: not a regular file`);
  }
  return { spec: { kind: 'image', path: image }, image, describe: `simulated host, image ${image}`, cleanup: () => undefined };
}

/** Opens the driver on the target the options name. */
export async function openDriverTarget(o: BenchOptions): Promise<DriverTarget> {
  const p = prepareTarget(o);
  try {
    const d = await openDisk(p.spec, 'blkbench', driverOptions(o));
    try {
      const grants = d.sim === null ? `; ${grantRoom(d.platform, d.device, o)}` : '';
      return {
        engine: driverEngine(d.device, d.sim?.disk ?? null, o.zeroCopy),
        device: d.device,
        sim: d.sim,
        grantLimit: d.sim === null ? (d.platform.grants.limit?.() ?? null) : null,
        image: p.image,
        describe: `${p.describe} (${d.device.info.size} bytes)${grants}`,
        close: async () => {
          try {
            await d.close();
          } finally {
            p.cleanup();
          }
        },
      };
    } catch (err) {
      await d.close().catch(() => undefined);
      throw err;
    }
  } catch (err) {
    p.cleanup();
    throw err;
  }
}

/** The baseline: the same file through Node's fs (libuv's thread pool), `pread`/`pwrite` per I/O. */
export function openFsBaseline(path: string): IoEngine & { close(): void } {
  const fd = openSync(path, 'r+');
  const size = statSync(path).size;
  const io = (kind: 'read' | 'write', offset: number, buf: Uint8Array): Promise<void> =>
    new Promise((resolve, reject) => {
      let done = 0;
      const step = (err: NodeJS.ErrnoException | null, n: number): void => {
        if (err !== null) return reject(err);
        if (n === 0) return reject(new Error(`${kind} at ${offset + done}: end of file`));
        done += n;
        if (done === buf.byteLength) resolve();
        else if (kind === 'read') read(fd, buf, done, buf.byteLength - done, offset + done, step);
        else write(fd, buf, done, buf.byteLength - done, offset + done, step);
      };
      if (kind === 'read') read(fd, buf, 0, buf.byteLength, offset, step);
      else write(fd, buf, 0, buf.byteLength, offset, step);
    });
  return {
    label: 'baseline',
    size,
    sectorSize: 512,
    read: (offset, buf) => io('read', offset, buf),
    write: (offset, buf) => io('write', offset, buf),
    buffer: (bytes) => new Uint8Array(bytes),
    counters: () => null,
    close: () => closeSync(fd),
  };
}
