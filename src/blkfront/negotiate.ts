/**
 * The control path: the xenbus handshake with the backend (docs/protocol.md,
 * "Connect sequence", as Linux's talk_to_blkback and blkfront_connect do it).
 * It shares the rings and allocates the event channels, publishes them with
 * everything else in one transaction (retried as a whole on EAGAIN), and
 * reads what the backend offers. No I/O happens here.
 */
import { BlkifKey, queueDir, ringRefKey, vbdFrontendDir } from '../wire/blkif_keys.js';
import { BlkifError, isXenError } from '../errors.js';
import { BLKIF_NATIVE_ABI, BlkifOp } from '../wire/blkif.js';
import { XenbusState, xenbusStateName } from '../wire/xenbus_state.js';
import { switchState, waitForState } from '../xenbus/device.js';
import type { XenPlatform } from '../platform/types.js';
import { backendValue, readDiskInfo } from './disk_info.js';
import type { DeviceLocation, Negotiated, NegotiatedFeatures, NegotiationWishes, RingSetup } from './types.js';

/** Ring keys (`ring-ref`, `ring-refN`) in a ring's directory that 2^order-page rings do not use. */
export function staleRingKeys(children: readonly string[], order: number): string[] {
  const pages = 1 << order;
  return children.filter((k) => {
    if (k === BlkifKey.ringRef) return order !== 0;
    const m = /^ring-ref(\d+)$/.exec(k);
    return m !== null && (order === 0 || Number(m[1]) >= pages);
  });
}

/**
 * The keys in our directory that a connection with 2^order-page rings and
 * `queues` queues does not write: the other layout's queue directories and
 * ring keys. (Keys the toolstack owns are never touched.)
 */
export function staleKeys(children: readonly string[], order: number, queues: number): string[] {
  const ringKeys = new Set(staleRingKeys(children, order));
  return children.filter((k) => {
    if (k === 'ring-page-order') return order === 0;
    if (k === 'multi-queue-num-queues') return queues === 1;
    if (/^queue-\d+$/.test(k)) return queues === 1 || Number(k.slice(6)) >= queues;
    // With several queues, rings and ports live under queue-N/ only.
    if (k === 'event-channel') return queues > 1;
    if (k === BlkifKey.ringRef || /^ring-ref\d+$/.test(k)) return queues > 1 || ringKeys.has(k);
    return false;
  });
}

/** False for a flush, barrier or discard the features do not include (every other operation is always offered). */
export function offers(f: NegotiatedFeatures, op: number): boolean {
  return !(
    (op === BlkifOp.Discard && f.discard === null) ||
    (op === BlkifOp.FlushDiskcache && !f.flush) ||
    (op === BlkifOp.WriteBarrier && !f.barrier)
  );
}

/** The features without the one `op` needs (after the backend answered EOPNOTSUPP to it). */
export function withoutFeature(f: NegotiatedFeatures, op: number): NegotiatedFeatures {
  if (op === BlkifOp.FlushDiskcache) return { ...f, flush: false };
  if (op === BlkifOp.WriteBarrier) return { ...f, barrier: false };
  if (op === BlkifOp.Discard) return { ...f, discard: null };
  return f;
}

/** Reads where our device and its backend are (`device/vbd/<vdev>`). BLKIF_ENODEV when absent. */
export async function locateDevice(platform: XenPlatform, vdev: number | string): Promise<DeviceLocation> {
  const xs = platform.xenstore;
  const frontend = vbdFrontendDir(platform.domid, vdev);
  try {
    const backend = await xs.read(`${frontend}/${BlkifKey.backend}`);
    const backendId = await xs.readInt(`${frontend}/${BlkifKey.backendId}`);
    const v = Number((await xs.readOptional(`${frontend}/${BlkifKey.virtualDevice}`)) ?? vdev);
    return { frontend, backend, backendId, vdev: Number.isInteger(v) ? v : 0 };
  } catch (err) {
    if (isXenError(err, 'XS_ENOENT'))
      throw new BlkifError('BLKIF_ENODEV', `no virtual block device ${vdev} in ${frontend}`, { cause: err });
    throw err;
  }
}

function stateWait(what: string, loc: DeviceLocation) {
  return (err: unknown): never => {
    if (isXenError(err, 'XS_TIMEOUT')) throw new BlkifError('BLKIF_ENODEV', `backend ${loc.backend} did not reach ${what}`, { cause: err });
    throw err;
  };
}

/** Waits for the backend to reach `want`; BLKIF_ENODEV when its directory goes away or time runs out. */
export async function waitForBackend(
  platform: XenPlatform,
  loc: DeviceLocation,
  want: readonly XenbusState[],
  timeoutMs: number,
): Promise<XenbusState> {
  const s = await waitForState(platform.xenstore, loc.backend, [...want, XenbusState.Unknown], {
    timeoutMs,
    group: `blkfront:${loc.vdev}`,
  }).catch(stateWait(want.map(xenbusStateName).join(' or '), loc));
  if (s === XenbusState.Unknown) throw new BlkifError('BLKIF_ENODEV', `backend ${loc.backend} is gone`);
  return s;
}

/**
 * Runs the handshake from "backend in InitWait" to "frontend Connected".
 * `makeQueues` is called with the rings once the backend is Connected, so the
 * event handlers exist before we say Connected. On failure everything shared
 * or bound here is undone.
 */
/**
 * The backend closed again while a reconnect waited for it to connect
 * (blkback closing twice in quick succession): the reconnect starts over.
 */
export class BackendRestarted extends Error {
  constructor(readonly state: XenbusState) {
    super(`the backend went ${xenbusStateName(state)} during the handshake`);
  }
}

/**
 * Where a connection's rings come from: shared and bound by this thread
 * (the default), or by the threads that will run them (threaded.ts).
 */
export interface RingSource {
  /** Shares a ring of `pages` pages with the backend and allocates its unbound port. */
  make(q: number, backendId: number, pages: number): RingSetup | Promise<RingSetup>;
  /** Closes the port and unshares the ring (the handshake failed). */
  drop(ring: RingSetup): void;
}

/** Rings shared and bound through this thread's platform. */
export function platformRings(platform: XenPlatform): RingSource {
  return {
    make: (_q, backendId, pages) => {
      const ringPages = platform.grants.share(backendId, pages, true);
      try {
        return { pages: ringPages, channel: platform.evtchn.allocUnbound(backendId) };
      } catch (err) {
        platform.grants.unshare(ringPages);
        throw err;
      }
    },
    drop: (r) => {
      r.channel.close();
      platform.grants.unshare(r.pages);
    },
  };
}

/**
 * @param restartable a reconnect: a backend that goes Closing or Closed
 *   while we wait for it to connect throws {@link BackendRestarted} at once,
 *   rather than being waited on until the time runs out
 */
export async function talkToBackend(
  platform: XenPlatform,
  loc: DeviceLocation,
  wish: NegotiationWishes,
  makeQueues: (n: Negotiated) => void,
  restartable = false,
  source: RingSource = platformRings(platform),
): Promise<Negotiated> {
  const xs = platform.xenstore;
  const be = loc.backend;
  const fe = loc.frontend;
  await waitForBackend(platform, loc, [XenbusState.InitWait], wish.timeoutMs);

  const maxOrder = await xs.readInt(`${be}/${BlkifKey.maxRingPageOrder}`, { fallback: 0 }).catch(backendValue(loc));
  const maxQueues = await xs.readInt(`${be}/${BlkifKey.multiQueueMaxQueues}`, { fallback: 1 }).catch(backendValue(loc));
  let order = 0;
  while (order < maxOrder && 1 << (order + 1) <= wish.ringPages) order++;
  const nq = Math.max(1, Math.min(wish.queues, maxQueues));
  const pages = 1 << order;

  const rings: RingSetup[] = [];
  const undo = (): void => {
    for (const r of rings) source.drop(r);
  };
  try {
    for (let q = 0; q < nq; q++) rings.push(await source.make(q, loc.backendId, pages));
    await xs.transaction(async (tx) => {
      // What an earlier connection published and this one does not (a
      // backend that now offers fewer pages or queues, as after a migration)
      // goes in the same transaction, or the backend would read it as ours.
      for (const key of staleKeys(await tx.directory(fe), order, nq)) await tx.rm(`${fe}/${key}`);
      for (let q = 0; nq > 1 && q < nq; q++) {
        const dir = `${fe}/${queueDir(q)}`;
        const kids = await tx.directory(dir).catch((err: unknown) => {
          if (isXenError(err, 'XS_ENOENT')) return [];
          throw err;
        });
        for (const key of staleRingKeys(kids, order)) await tx.rm(`${dir}/${key}`);
      }
      if (order > 0) await tx.write(`${fe}/${BlkifKey.ringPageOrder}`, String(order));
      if (nq > 1) await tx.write(`${fe}/${BlkifKey.multiQueueNumQueues}`, String(nq));
      for (const [q, r] of rings.entries()) {
        const dir = nq === 1 ? fe : `${fe}/${queueDir(q)}`;
        if (order === 0) await tx.write(`${dir}/${BlkifKey.ringRef}`, String(r.pages.refs[0]));
        else for (const [i, ref] of r.pages.refs.entries()) await tx.write(`${dir}/${ringRefKey(i)}`, String(ref));
        await tx.write(`${dir}/${BlkifKey.eventChannel}`, String(r.channel.port));
      }
      await tx.write(`${fe}/${BlkifKey.protocol}`, BLKIF_NATIVE_ABI.protocol);
      await tx.write(`${fe}/${BlkifKey.featurePersistent}`, wish.persistent ? '1' : '0');
    });
    await switchState(xs, fe, XenbusState.Initialised);
    const reached = await waitForBackend(
      platform,
      loc,
      restartable ? [XenbusState.Connected, XenbusState.Closing, XenbusState.Closed] : [XenbusState.Connected],
      wish.timeoutMs,
    );
    if (reached !== XenbusState.Connected) throw new BackendRestarted(reached);
    const info = await readDiskInfo(platform, loc, wish, { ringPages: pages, queues: nq });
    const n = { rings, info };
    makeQueues(n);
    await switchState(xs, fe, XenbusState.Connected);
    return n;
  } catch (err) {
    undo();
    throw err;
  }
}
