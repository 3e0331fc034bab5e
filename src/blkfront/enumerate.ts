/**
 * The guest's virtual block devices as the toolstack lists them in xenstore
 * (device/vbd/<vdev>), read without connecting to any, and a watch that
 * reports disks plugged in (`xl block-attach`) and pulled out
 * (`xl block-detach`) while the program runs.
 */
import { BlkifKey, vbdFrontendDir } from '../wire/blkif_keys.js';
import { BlkifError, asError, isXenError } from '../errors.js';
import type { XenPlatform } from '../platform/types.js';
import { XenbusState } from '../wire/xenbus_state.js';
import type { Watch } from '../xenbus/watch.js';

/** One virtual block device, as xenstore describes it. */
export interface BlockDeviceSummary {
  /** The key under device/vbd (what {@link openBlockDevice} takes as `vdev`). */
  readonly vdev: number;
  /** Linux's name for it: xvda, xvdb… (sda, hda for the emulated majors); `vbd<vdev>` when it has none. */
  readonly name: string;
  /** Partition number the vdev itself names (xvda1 is 1), 0 for a whole disk. */
  readonly partition: number;
  readonly backend: string;
  readonly backendId: number;
  /** The backend's xenbus state (Unknown when its key is missing). */
  readonly backendState: XenbusState;
  /** The frontend's state: Initialising until a frontend takes the device. */
  readonly frontendState: XenbusState;
  /** Size in bytes, once the backend published it (it does so when a frontend connects); else null. */
  readonly size: number | null;
  /** Logical sector size, when published; else null. */
  readonly sectorSize: number | null;
  /** The toolstack's mode key is "r". */
  readonly readOnly: boolean;
  /** "disk" or "cdrom" (the backend's device-type key; "disk" when absent). */
  readonly deviceType: string;
  /**
   * Who drives it now: the guest's kernel (its xen-blkfront bound it), a
   * process of ours (with its pid when known; `self` for this one), or
   * nobody (null): only then can {@link openBlockDevice} take it.
   */
  readonly owner: 'kernel' | 'process' | null;
  /** The holder's pid when `owner` is 'process' and it said; else null. */
  readonly ownerPid: number | null;
}

const letters = (n: number): string => {
  let s = '';
  for (let i = n + 1; i > 0; i = Math.floor((i - 1) / 26)) s = String.fromCharCode(97 + ((i - 1) % 26)) + s;
  return s;
};

/**
 * Decodes a virtual-device number (Xen's vbd-interface: 202 for xvd, 8 for
 * sd, 3 and 22 for hd, and the extended form with bit 28 set) into Linux's
 * name and the partition it names.
 */
export function vdevName(vdev: number): { name: string; partition: number } {
  if (!Number.isInteger(vdev) || vdev < 0) return { name: `vbd${vdev}`, partition: 0 };
  if ((vdev & (1 << 28)) !== 0) {
    const disk = (vdev >> 8) & 0xfffff;
    const part = vdev & 0xff;
    return { name: `xvd${letters(disk)}${part || ''}`, partition: part };
  }
  const major = vdev >> 8;
  const minor = vdev & 0xff;
  const base = (prefix: string, disk: number, part: number): { name: string; partition: number } => ({
    name: `${prefix}${letters(disk)}${part || ''}`,
    partition: part,
  });
  if (major === 202) return base('xvd', minor >> 4, minor & 15);
  if (major === 8) return base('sd', minor >> 4, minor & 15);
  if (major === 3) return base('hd', minor >> 6, minor & 63);
  if (major === 22) return base('hd', 2 + (minor >> 6), minor & 63);
  return { name: `vbd${vdev}`, partition: 0 };
}

const num = (s: string | undefined): number | null => {
  if (s === undefined || !/^\d+$/.test(s)) return null;
  const n = Number(s);
  return Number.isSafeInteger(n) ? n : null;
};

async function describe(platform: XenPlatform, key: string): Promise<BlockDeviceSummary | null> {
  const xs = platform.xenstore;
  const fe = vbdFrontendDir(platform.domid, key);
  const backend = await xs.readOptional(`${fe}/${BlkifKey.backend}`);
  // A device the toolstack is still writing (or already removing) is not listed yet (or any more).
  if (backend === undefined) return null;
  const [backendId, virt, feState, beState, mode, sectors, sectorSize, deviceType] = await Promise.all(
    [
      xs.readOptional(`${fe}/${BlkifKey.backendId}`),
      xs.readOptional(`${fe}/${BlkifKey.virtualDevice}`),
      xs.readOptional(`${fe}/${BlkifKey.state}`),
      xs.readOptional(`${backend}/${BlkifKey.state}`),
      xs.readOptional(`${backend}/${BlkifKey.mode}`),
      xs.readOptional(`${backend}/${BlkifKey.sectors}`),
      xs.readOptional(`${backend}/${BlkifKey.sectorSize}`),
      xs.readOptional(`${backend}/${BlkifKey.deviceType}`),
    ].map((p) =>
      p.catch((err: unknown) => {
        // The backend's keys may be unreadable to this domain (EACCES) or gone mid-way: unknown, not fatal.
        if (isXenError(err, 'XS_EACCES') || isXenError(err, 'XS_ENOENT')) return undefined;
        throw err;
      }),
    ),
  );
  const vdev = num(virt) ?? num(key) ?? 0;
  const { name, partition } = vdevName(vdev);
  const owner = await platform.vbds.owner(key).catch(() => null);
  const secs = num(sectors);
  const ss = num(sectorSize);
  return {
    vdev: num(key) ?? vdev,
    name,
    partition,
    backend,
    backendId: num(backendId) ?? 0,
    backendState: (num(beState) ?? XenbusState.Unknown) as XenbusState,
    frontendState: (num(feState) ?? XenbusState.Unknown) as XenbusState,
    // `sectors` counts 512-byte units whatever the logical sector size.
    size: secs === null ? null : secs * 512,
    sectorSize: ss,
    readOnly: mode === 'r',
    deviceType: deviceType ?? 'disk',
    owner: owner?.kind ?? null,
    ownerPid: owner?.kind === 'process' ? owner.pid : null,
  };
}

/**
 * The virtual block devices of this domain, in vdev order, read from
 * xenstore without connecting to any of them.
 */
export async function listBlockDevices(platform: XenPlatform): Promise<BlockDeviceSummary[]> {
  const xs = platform.xenstore;
  let keys: string[];
  try {
    keys = await xs.directory(vbdFrontendDir(platform.domid));
  } catch (err) {
    if (isXenError(err, 'XS_ENOENT')) return [];
    throw err;
  }
  const all = await Promise.all(keys.map((k) => describe(platform, k)));
  return all.filter((d): d is BlockDeviceSummary => d !== null).sort((a, b) => a.vdev - b.vdev);
}

/** What {@link watchBlockDevices} reports. */
export type BlockDeviceEvent =
  | { readonly type: 'added'; readonly device: BlockDeviceSummary }
  | { readonly type: 'removed'; readonly device: BlockDeviceSummary }
  /** The backend's state changed (Closing: the toolstack is detaching it). */
  | { readonly type: 'changed'; readonly device: BlockDeviceSummary };

/**
 * Disks plugged in and pulled out, as an async iterator: first an 'added'
 * for each device there now, then 'added', 'removed' and 'changed' (the
 * backend's state) as the toolstack acts. Breaking out of the loop, or
 * {@link BlockDeviceWatcher.close}, removes the xenstore watches.
 */
export function watchBlockDevices(platform: XenPlatform): BlockDeviceWatcher {
  return new BlockDeviceWatcher(platform);
}

/**
 * What {@link watchBlockDevices} returns: an async iterator of
 * {@link BlockDeviceEvent}s, with {@link waitFor} for one event in
 * particular and {@link devices} for the disks known now.
 */
export class BlockDeviceWatcher implements AsyncIterableIterator<BlockDeviceEvent> {
  private readonly known = new Map<number, BlockDeviceSummary>();
  private readonly queued: BlockDeviceEvent[] = [];
  private waiter: { resolve: (r: IteratorResult<BlockDeviceEvent>) => void; reject: (e: unknown) => void } | null = null;
  private error: unknown = null;
  private done = false;
  private scanning: Promise<void> | null = null;
  private again = false;
  /** The watch on the frontend directory. */
  private readonly watch: Promise<Watch>;
  /** A watch on each known backend's state key, by backend path (null when it could not be set). */
  private readonly backendWatches = new Map<string, Promise<Watch | null>>();

  constructor(private readonly platform: XenPlatform) {
    const xs = platform.xenstore;
    const rescan = (): void => this.rescan();
    // The frontend directories say what exists; the backends' state keys say how each is doing.
    // One watch on the backend area would need read access to dom0's tree, which a guest has
    // only for its own backends: their state keys are watched one by one as they appear.
    this.watch = xs.watch(vbdFrontendDir(platform.domid), rescan, { group: 'blkfront:enumerate' });
    this.watch.catch((err: unknown) => this.fail(err));
  }

  private rescan(): void {
    if (this.done) return;
    if (this.scanning !== null) {
      this.again = true;
      return;
    }
    this.scanning = (async () => {
      do {
        this.again = false;
        const now = await listBlockDevices(this.platform);
        const seen = new Set<number>();
        for (const d of now) {
          seen.add(d.vdev);
          const before = this.known.get(d.vdev);
          this.known.set(d.vdev, d);
          if (before === undefined) {
            this.push({ type: 'added', device: d });
            this.watchBackend(d.backend);
          } else if (before.backendState !== d.backendState || before.size !== d.size || before.backend !== d.backend) {
            this.push({ type: 'changed', device: d });
          }
        }
        for (const [vdev, d] of this.known) {
          if (!seen.has(vdev)) {
            this.known.delete(vdev);
            this.push({ type: 'removed', device: d });
            void this.backendWatches
              .get(d.backend)
              ?.then((w) => w?.unwatch())
              .catch(() => undefined);
            this.backendWatches.delete(d.backend);
          }
        }
      } while (this.again && !this.done);
    })()
      .catch((err: unknown) => this.fail(err))
      .finally(() => {
        this.scanning = null;
      });
  }

  private watchBackend(backend: string): void {
    if (this.backendWatches.has(backend)) return;
    this.backendWatches.set(
      backend,
      this.platform.xenstore.watch(`${backend}/${BlkifKey.state}`, () => this.rescan(), { group: 'blkfront:enumerate' }).catch(() => null),
    );
  }

  private push(e: BlockDeviceEvent): void {
    if (this.done) return;
    const w = this.waiter;
    if (w !== null) {
      this.waiter = null;
      w.resolve({ value: e, done: false });
    } else {
      this.queued.push(e);
    }
  }

  private fail(err: unknown): void {
    if (this.done) return;
    this.error = err;
    const w = this.waiter;
    this.waiter = null;
    w?.reject(err);
    void this.close();
  }

  /** The devices known now (after the events delivered or queued so far). */
  get devices(): BlockDeviceSummary[] {
    return [...this.known.values()].sort((a, b) => a.vdev - b.vdev);
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<BlockDeviceEvent>> {
    const e = this.queued.shift();
    if (e !== undefined) return Promise.resolve({ value: e, done: false });
    if (this.error !== null) {
      const err = this.error;
      this.error = null;
      return Promise.reject(asError(err));
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    if (this.waiter !== null) return Promise.reject(new BlkifError('BLKIF_EINVAL', 'next() called again before the last call settled'));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  /**
   * The next event that `match` accepts (the others are consumed); rejects
   * when the watcher closes first or `timeoutMs` passes.
   */
  async waitFor(match: (e: BlockDeviceEvent) => boolean, timeoutMs?: number): Promise<BlockDeviceEvent> {
    let timer: NodeJS.Timeout | undefined;
    let mine: BlockDeviceWatcher['waiter'] = null;
    const timeout =
      timeoutMs === undefined
        ? null
        : new Promise<never>((_, reject) => {
            timer = setTimeout(() => {
              // Withdraw our pending next(): the next event must be queued for whoever asks, not lost.
              if (mine !== null && this.waiter === mine) this.waiter = null;
              reject(new BlkifError('BLKIF_ETIMEDOUT', `no matching block-device event within ${timeoutMs} ms`));
            }, timeoutMs);
          });
    try {
      for (;;) {
        const next = this.next();
        mine = this.waiter;
        const r = await (timeout === null ? next : Promise.race([next, timeout]));
        if (r.done === true) throw new BlkifError('BLKIF_CLOSED', 'block-device watcher closed');
        if (match(r.value)) return r.value;
      }
    } finally {
      clearTimeout(timer);
    }
  }

  async return(): Promise<IteratorResult<BlockDeviceEvent>> {
    await this.close();
    return { value: undefined, done: true };
  }

  /** Removes the watches; a pending next() resolves done. */
  async close(): Promise<void> {
    if (this.done) return;
    this.done = true;
    const w = this.waiter;
    this.waiter = null;
    w?.resolve({ value: undefined, done: true });
    const all = await Promise.all([this.watch.catch(() => null), ...this.backendWatches.values()]);
    await Promise.all(all.flatMap((x) => (x === null ? [] : [x.unwatch().catch(() => undefined)])));
  }
}
