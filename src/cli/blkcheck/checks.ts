/**
 * blkcheck's checks: what a Xen block backend offers (negotiation), whether
 * it serves what the protocol allows right to the edges (correctness, data
 * written and read back by pattern), and, with --hostile, what it does with
 * what the protocol forbids (robustness). Each check names the rule it
 * checks and returns one verdict. A backend may refuse a forbidden request
 * (BLKIF_RSP_ERROR, or disconnecting); it fails a check when it crashes,
 * hangs, writes outside the request, returns another request's data, or
 * stops serving.
 */
// Not the package root: it loads the file-system layer's WebAssembly, memory a checker has no use for.
import { openBlockDevice, type BlockDevice } from '../../blkfront/device.js';
import type { BlockDeviceOptions } from '../../blkfront/options.js';
import type { XenPlatform } from '../../platform/types.js';
import { openThreadedDevice } from '../../blkfront/threaded.js';
import { BlkifKey } from '../../wire/blkif_keys.js';
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_NATIVE_ABI,
  BLKIF_SECTOR_SIZE,
  BlkifOp,
  BlkifRsp,
  SECTORS_PER_PAGE,
  segmentOffset,
  setRequestHeader,
  setSegment,
} from '../../wire/blkif.js';
import { PAGE_SIZE } from '../../wire/page.js';
import { RawConnection, type Outcome } from './raw.js';
import { differs, fill } from './pattern.js';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';

export type Result = 'pass' | 'fail' | 'not offered' | 'skipped';

export interface Verdict {
  result: Result;
  /** What the backend did or offered, in a few words. */
  detail: string;
}

export type Group = 'negotiation' | 'correctness' | 'robustness';

export interface Check {
  id: string;
  group: Group;
  /** The blkif.h (or xenbus) rule checked. */
  rule: string;
  run(ctx: CheckContext): Promise<Verdict>;
}

/** What the checks work with. */
export interface CheckContext {
  platform: XenPlatform;
  vdev: number | string;
  /** Another vbd of the same backend that must keep serving (read-only checks on it), if there is one. */
  other: number | string | null;
  /** The backend's directory. */
  backend: string;
  /** Keys the backend published, read while it waited for us (InitWait) and after it connected. */
  keys: Map<string, string>;
  /** The simulated backend, when the disk is simulated (a resize needs the toolstack). */
  resize: ((bytes: number) => Promise<void>) | null;
  /** Why a frontend asking for the defaults could not connect (null: it did). */
  connectError: string | null;
  /** Where the worker threads' entry point is (for the every-queue check). */
  queueWorker: URL;
  timeoutMs: number;
}

const OKAY = 'BLKIF_RSP_OKAY';
const pass = (detail: string): Verdict => ({ result: 'pass', detail });
const fail = (detail: string): Verdict => ({ result: 'fail', detail });
const notOffered = (detail: string): Verdict => ({ result: 'not offered', detail });
const skipped = (detail: string): Verdict => ({ result: 'skipped', detail });

async function withDevice<T>(
  ctx: CheckContext,
  opts: Omit<BlockDeviceOptions, 'platform' | 'vdev'>,
  f: (d: BlockDevice) => Promise<T>,
): Promise<T> {
  const d = await openBlockDevice({ platform: ctx.platform, vdev: ctx.vdev, timeoutMs: ctx.timeoutMs, ...opts });
  try {
    return await f(d);
  } finally {
    await d.close();
  }
}

/** Writes `bytes` at `offset` with the round's pattern and reads them back: null, or what differed. */
async function roundTrip(d: BlockDevice, offset: number, bytes: number, seed: number): Promise<string | null> {
  await d.write(offset, fill(new Uint8Array(bytes), offset, seed));
  const back = new Uint8Array(bytes);
  await d.readInto(offset, back);
  return differs(back, offset, seed);
}

const num = (ctx: CheckContext, key: string): number | undefined => {
  const v = ctx.keys.get(key);
  return v === undefined ? undefined : Number(v);
};

const isWhole = (v: number | undefined, min: number): boolean => v !== undefined && Number.isSafeInteger(v) && v >= min;

// ---------------------------------------------------------------- negotiation

const NEGOTIATION: Check[] = [
  {
    id: 'connect',
    group: 'negotiation',
    rule: 'xenbus: InitWait, then Connected for a frontend asking for the defaults, with keys it can believe',
    run: async (ctx) => (ctx.connectError === null ? pass(`connected from ${ctx.backend}`) : fail(ctx.connectError)),
  },
  {
    id: 'keys',
    group: 'negotiation',
    rule: 'blkif.h: a connected backend publishes sectors, info and sector-size, as decimal integers',
    run: async (ctx) => {
      const missing = ['sectors', 'info', 'sector-size'].filter((k) => !isWhole(num(ctx, k), 0));
      return missing.length === 0
        ? pass(`sectors ${ctx.keys.get('sectors')}, info ${ctx.keys.get('info')}, sector-size ${ctx.keys.get('sector-size')}`)
        : fail(`missing or not integers: ${missing.join(', ')}`);
    },
  },
  {
    id: 'sector-size',
    group: 'negotiation',
    rule: 'blkif.h: sector-size a power of two of at least 512; physical-sector-size a multiple of it',
    run: async (ctx) => {
      const ss = num(ctx, 'sector-size')!;
      const pss = num(ctx, 'physical-sector-size');
      if (!(ss >= 512 && (ss & (ss - 1)) === 0)) return fail(`sector-size ${ss}`);
      if (pss !== undefined && (!isWhole(pss, ss) || pss % ss !== 0)) return fail(`physical-sector-size ${pss} with sector-size ${ss}`);
      return pass(`${ss}${pss === undefined ? '' : `, physical ${pss}`}`);
    },
  },
  {
    id: 'sectors-unit',
    group: 'negotiation',
    rule: 'blkif.h (2024 reconciliation): sectors counts 512-byte units whatever sector-size is',
    run: async (ctx) => {
      const sectors = num(ctx, 'sectors')!;
      const ss = num(ctx, 'sector-size')!;
      const d = await withDevice(ctx, { queues: 1 }, async (dev) => dev.info);
      if (d.size !== sectors * BLKIF_SECTOR_SIZE) return fail(`the device says ${d.size} bytes for ${sectors} sectors`);
      if ((sectors * BLKIF_SECTOR_SIZE) % ss !== 0) return fail(`${sectors} 512-byte sectors is not a whole number of ${ss}-byte sectors`);
      return pass(`${sectors} x 512 = ${sectors * BLKIF_SECTOR_SIZE} bytes`);
    },
  },
  {
    id: 'ring-order',
    group: 'negotiation',
    rule: 'blkif.h: max-ring-page-order an integer 0..4 (XENBUS_MAX_RING_GRANT_ORDER), absent meaning one page',
    run: async (ctx) => {
      const o = num(ctx, BlkifKey.maxRingPageOrder);
      if (o === undefined) return notOffered('one-page rings only');
      return isWhole(o, 0) && o <= 4
        ? pass(`up to ${1 << o} pages`)
        : fail(`max-ring-page-order ${ctx.keys.get(BlkifKey.maxRingPageOrder)}`);
    },
  },
  {
    id: 'queues',
    group: 'negotiation',
    rule: 'blkif.h: multi-queue-max-queues an integer of at least 1, absent meaning one queue',
    run: async (ctx) => {
      const q = num(ctx, BlkifKey.multiQueueMaxQueues);
      if (q === undefined) return notOffered('one queue');
      return isWhole(q, 1) ? pass(`${q} queues`) : fail(`multi-queue-max-queues ${ctx.keys.get(BlkifKey.multiQueueMaxQueues)}`);
    },
  },
  {
    id: 'indirect-offer',
    group: 'negotiation',
    rule: 'blkif.h: feature-max-indirect-segments, when offered, more than the 11 direct segments',
    run: async (ctx) => {
      const n = num(ctx, 'feature-max-indirect-segments');
      if (n === undefined || n === 0) return notOffered('no indirect descriptors');
      return isWhole(n, BLKIF_MAX_SEGMENTS_PER_REQUEST + 1) ? pass(`${n} segments`) : fail(`feature-max-indirect-segments ${n}`);
    },
  },
  {
    id: 'persistent',
    group: 'negotiation',
    rule: 'blkif.h: feature-persistent 0 or 1; persistent grants in use only when both ends say 1',
    run: async (ctx) => {
      const v = ctx.keys.get('feature-persistent');
      if (v === undefined || v === '0') {
        const f = await withDevice(ctx, { queues: 1, persistentGrants: true }, async (d) => d.info.features.persistentGrants);
        return f ? fail('not offered, yet the device negotiated it') : notOffered('no persistent grants');
      }
      if (v !== '1') return fail(`feature-persistent "${v}"`);
      const off = await withDevice(ctx, { queues: 1, persistentGrants: false }, async (d) => d.info.features.persistentGrants);
      return off ? fail('used although the frontend did not ask') : pass('offered, used only when asked');
    },
  },
  {
    id: 'discard-keys',
    group: 'negotiation',
    rule: 'blkif.h: with feature-discard, discard-granularity and discard-alignment in bytes, alignment below granularity',
    run: async (ctx) => {
      if (ctx.keys.get('feature-discard') !== '1') return notOffered('no discard');
      const g = num(ctx, 'discard-granularity') ?? BLKIF_SECTOR_SIZE;
      const a = num(ctx, 'discard-alignment') ?? 0;
      const ss = num(ctx, 'sector-size')!;
      if (!isWhole(g, 1) || g % ss !== 0) return fail(`discard-granularity ${g} with ${ss}-byte sectors`);
      if (!isWhole(a, 0) || a >= g) return fail(`discard-alignment ${a} with granularity ${g}`);
      return pass(`granularity ${g}, alignment ${a}`);
    },
  },
  {
    id: 'connect-every-layout',
    group: 'negotiation',
    rule: 'xenbus: a connect at every ring order and queue count offered (up to 4 queues), each serving I/O',
    run: async (ctx) => {
      const maxOrder = num(ctx, BlkifKey.maxRingPageOrder) ?? 0;
      const maxQueues = Math.min(num(ctx, BlkifKey.multiQueueMaxQueues) ?? 1, 4);
      const tried: string[] = [];
      for (let order = 0; order <= maxOrder; order++) {
        for (let queues = 1; queues <= maxQueues; queues++) {
          const bad = await withDevice(ctx, { queues, ringPages: 1 << order }, async (d) => {
            const f = d.info.features;
            if (f.ringPages !== 1 << order || f.queues !== queues)
              return `asked ${queues} x ${1 << order}, got ${f.queues} x ${f.ringPages}`;
            return roundTrip(d, 0, 65536, order * 16 + queues);
          });
          if (bad !== null) return fail(`${queues} queue(s) x ${1 << order} page(s): ${bad}`);
          tried.push(`${queues}x${1 << order}`);
        }
      }
      return pass(`queues x pages ${tried.join(', ')}`);
    },
  },
];

// ---------------------------------------------------------------- correctness

const CORRECTNESS: Check[] = [
  {
    id: 'direct-segments',
    group: 'correctness',
    rule: 'blkif.h: 1 to 11 segments in a request',
    run: (ctx) =>
      withDevice(ctx, { queues: 1, maxIndirectSegments: 0 }, async (d) => {
        for (let n = 1; n <= BLKIF_MAX_SEGMENTS_PER_REQUEST; n++) {
          const bad = await roundTrip(d, n * (1 << 20), n * PAGE_SIZE, n);
          if (bad !== null) return fail(`${n} segments: ${bad}`);
        }
        const s = d.stats();
        return s.indirectRequests === 0 ? pass(`${s.requests} requests of 1..11 segments`) : fail('indirect requests were sent');
      }),
  },
  {
    id: 'indirect-segments',
    group: 'correctness',
    rule: 'blkif.h: indirect requests up to feature-max-indirect-segments',
    run: async (ctx) => {
      const max = num(ctx, 'feature-max-indirect-segments') ?? 0;
      if (max <= BLKIF_MAX_SEGMENTS_PER_REQUEST) return notOffered('no indirect descriptors');
      return withDevice(ctx, { queues: 1 }, async (d) => {
        const top = d.info.features.indirectSegments;
        for (const n of [...new Set([12, 64, top])].filter((n) => n <= top)) {
          const bad = await roundTrip(d, 0, n * PAGE_SIZE, n);
          if (bad !== null) return fail(`${n} segments: ${bad}`);
        }
        const s = d.stats();
        return s.indirectRequests > 0
          ? pass(`12, 64 and ${top} segments (${s.indirectRequests} indirect requests)`)
          : fail('no indirect request was sent');
      });
    },
  },
  {
    id: 'partial-pages',
    group: 'correctness',
    rule: 'blkif.h: first_sect..last_sect at every edge of a page, nothing outside them touched',
    run: async (ctx) => {
      if ((num(ctx, 'sector-size') ?? 512) !== BLKIF_SECTOR_SIZE) return skipped('sector-size is not 512: only whole pages are allowed');
      const c = await RawConnection.open(ctx.platform, ctx.vdev, { timeoutMs: ctx.timeoutMs });
      try {
        const pages = c.share(2);
        const src = pages.bytes.subarray(0, PAGE_SIZE);
        const dst = pages.bytes.subarray(PAGE_SIZE);
        let k = 0;
        for (let first = 0; first < SECTORS_PER_PAGE; first++) {
          for (let last = first; last < SECTORS_PER_PAGE; last++, k++) {
            const sector = 4096 + k * SECTORS_PER_PAGE;
            fill(src, sector * 512 - first * 512, k + 1);
            let o = await rawIo(c, BlkifOp.Write, sector, pages.refs[0]!, first, last);
            if (o !== OKAY) return fail(`write of sectors ${first}..${last}: ${o}`);
            dst.fill(0xee);
            o = await rawIo(c, BlkifOp.Read, sector, pages.refs[1]!, first, last);
            if (o !== OKAY) return fail(`read of sectors ${first}..${last}: ${o}`);
            for (let i = 0; i < PAGE_SIZE; i++) {
              const inside = i >= first * 512 && i < (last + 1) * 512;
              if (inside ? dst[i] !== src[i] : dst[i] !== 0xee) {
                return fail(
                  `sectors ${first}..${last}: byte ${i} of the page ${inside ? 'not what was written' : 'written outside the segment'}`,
                );
              }
            }
          }
        }
        return pass(`${k} first/last pairs written and read back`);
      } finally {
        await c.close();
      }
    },
  },
  {
    id: 'last-sector',
    group: 'correctness',
    rule: 'blkif.h: the last sector of the disk is served',
    run: (ctx) =>
      withDevice(ctx, { queues: 1 }, async (d) => {
        const ss = d.info.sectorSize;
        for (const bytes of [ss, Math.max(ss, PAGE_SIZE), 11 * PAGE_SIZE]) {
          const bad = await roundTrip(d, d.info.size - bytes, bytes, bytes);
          if (bad !== null) return fail(`the last ${bytes} bytes: ${bad}`);
        }
        return pass(`the last ${ss}, ${Math.max(ss, PAGE_SIZE)} and ${11 * PAGE_SIZE} bytes`);
      }),
  },
  {
    id: 'flush',
    group: 'correctness',
    rule: 'blkif.h: BLKIF_OP_FLUSH_DISKCACHE after completed writes, and the writes then read back',
    run: async (ctx) => {
      if (ctx.keys.get('feature-flush-cache') !== '1') return notOffered('no flush');
      return withDevice(ctx, { queues: 1 }, async (d) => {
        const writes = Array.from({ length: 8 }, (_, i) => d.write(i * 65536, fill(new Uint8Array(65536), i * 65536, 77)));
        await Promise.all(writes);
        await d.flush();
        const back = await d.read(0, 8 * 65536);
        const bad = differs(back, 0, 77);
        return bad === null ? pass(`${d.stats().flushes} flush after 8 writes`) : fail(bad);
      });
    },
  },
  {
    id: 'barrier',
    group: 'correctness',
    rule: 'blkif.h: BLKIF_OP_WRITE_BARRIER with data, ordered after what completed before it',
    run: async (ctx) => {
      if (ctx.keys.get('feature-barrier') !== '1') return notOffered('no barrier');
      const c = await RawConnection.open(ctx.platform, ctx.vdev, { timeoutMs: ctx.timeoutMs });
      try {
        const pages = c.share(2);
        fill(pages.bytes.subarray(0, PAGE_SIZE), 8192 * 512, 5);
        let o = await rawIo(c, BlkifOp.WriteBarrier, 8192, pages.refs[0]!, 0, 7);
        if (o !== OKAY) return fail(`barrier write: ${o}`);
        o = await rawIo(c, BlkifOp.Read, 8192, pages.refs[1]!, 0, 7);
        const bad = o === OKAY ? differs(pages.bytes.subarray(PAGE_SIZE), 8192 * 512, 5) : String(o);
        return bad === null ? pass('a barrier write read back') : fail(bad);
      } finally {
        await c.close();
      }
    },
  },
  {
    id: 'discard',
    group: 'correctness',
    rule: 'blkif.h: BLKIF_OP_DISCARD at the granularity and alignment edges, nothing beside the range touched',
    run: async (ctx) => {
      if (ctx.keys.get('feature-discard') !== '1') return notOffered('no discard');
      return withDevice(ctx, { queues: 1 }, async (d) => {
        const g = d.info.features.discard!.granularity;
        const base = 16 << 20;
        const span = 4 * Math.max(g, 65536);
        const bad0 = await roundTrip(d, base, span, 9);
        if (bad0 !== null) return fail(`before: ${bad0}`);
        const cut = span / 4;
        await d.discard(base + cut, 2 * cut);
        // A sector-sized discard inside a granule: a backend may do nothing with it, but must accept it.
        await d.discard(base + span - d.info.sectorSize, d.info.sectorSize);
        const before = await d.read(base, cut);
        const after = await d.read(base + 3 * cut, cut - d.info.sectorSize);
        const bad = differs(before, base, 9) ?? differs(after, base + 3 * cut, 9);
        return bad === null ? pass(`granularity ${g}: discarded ranges leave their neighbours intact`) : fail(`beside the range: ${bad}`);
      });
    },
  },
  {
    id: 'grants-beyond-persistent',
    group: 'correctness',
    rule: 'blkif.h (feature-persistent): more distinct grants than the backend keeps mapped (its LRU), data still right',
    run: async (ctx) => {
      if (ctx.keys.get('feature-persistent') !== '1') return notOffered('no persistent grants');
      // No pool: every request's pages are fresh grants, so the backend sees thousands of distinct ones.
      return withDevice(ctx, { queues: 1, pool: false }, async (d) => {
        const n = 3000;
        for (let i = 0; i < n; i += 32) {
          await Promise.all(
            Array.from({ length: 32 }, async (_, j) => {
              const at = ((i + j) % 512) * 8192 + (24 << 20);
              const bad = await roundTrip(d, at, PAGE_SIZE, i + j + 1);
              if (bad !== null) throw new Error(bad);
            }),
          );
        }
        return pass(`${2 * n} requests, each on fresh grants`);
      }).catch((err: unknown) => fail(err instanceof Error ? err.message : String(err)));
    },
  },
  {
    id: 'every-queue',
    group: 'correctness',
    rule: 'blkif.h (multi-queue): every queue serving at once, each from its own thread',
    run: async (ctx) => {
      const queues = Math.min(num(ctx, BlkifKey.multiQueueMaxQueues) ?? 1, 4);
      if (queues < 2) return notOffered('one queue');
      return everyQueue(ctx, queues);
    },
  },
  {
    id: 'reconnect-cycles',
    group: 'correctness',
    rule: 'xenbus: Closing/Closed and connect again, 5 cycles, writes in flight at each close landing',
    run: async (ctx) => {
      for (let cycle = 0; cycle < 5; cycle++) {
        const d = await openBlockDevice({ platform: ctx.platform, vdev: ctx.vdev, timeoutMs: ctx.timeoutMs });
        const writes = Array.from({ length: 32 }, (_, i) =>
          d.write((32 << 20) + i * 16384, fill(new Uint8Array(16384), (32 << 20) + i * 16384, 100 + cycle)),
        );
        const closing = d.close();
        await Promise.allSettled(writes);
        await closing;
        const bad = await withDevice(ctx, {}, async (e) => differs(await e.read(32 << 20, 32 * 16384), 32 << 20, 100 + cycle));
        if (bad !== null) return fail(`cycle ${cycle + 1}: ${bad}`);
      }
      return pass('5 cycles');
    },
  },
  {
    id: 'resize',
    group: 'correctness',
    rule: 'blkif.h: a new sectors value while connected (Connected written again) seen by the frontend',
    run: async (ctx) => {
      const resize = ctx.resize;
      if (resize === null) return skipped('a resize needs the toolstack (xl block-resize is not a guest operation)');
      return withDevice(ctx, {}, async (d) => {
        const was = d.info.size;
        const seen = new Promise<number>((r) => d.once('resize', (info) => r(info.size)));
        // Smaller: a backend need not be able to grow (a memory disk cannot); the last MiB is scratch like the rest.
        await resize(was - (1 << 20));
        const got = await Promise.race([seen, new Promise<number>((r) => setTimeout(() => r(-1), ctx.timeoutMs))]);
        await resize(was);
        return got === was - (1 << 20) ? pass(`${was} -> ${got} bytes, and back`) : fail(got < 0 ? 'no resize seen' : `saw ${got} bytes`);
      });
    },
  },
];

/** One raw request of one segment: 'BLKIF_RSP_OKAY', another status's name, or what happened instead. */
async function rawIo(c: RawConnection, op: number, sector: number, gref: number, first: number, last: number): Promise<string> {
  const { view, off } = c.slot();
  setRequestHeader(BLKIF_NATIVE_ABI, view, off, op, 1, c.handle, 7, 0, sector);
  setSegment(view, segmentOffset(BLKIF_NATIVE_ABI, off, 0), gref, first, last);
  c.produced();
  c.push();
  const o = await c.outcome(1);
  return said(o);
}

/** What a push led to, in words. */
export function said(o: Outcome): string {
  if (o.ringError !== null) return `a broken ring (${o.ringError})`;
  if (o.responses.length > 0) {
    const n = new Map<string, number>();
    for (const r of o.responses) n.set(statusName(r.status), (n.get(statusName(r.status)) ?? 0) + 1);
    return [...n].map(([name, k]) => (k === 1 ? name : `${k} x ${name}`)).join(', ');
  }
  if (o.left !== null) return `disconnected (state ${o.left})`;
  return 'nothing';
}

export function statusName(s: number): string {
  return s === BlkifRsp.Okay
    ? 'BLKIF_RSP_OKAY'
    : s === BlkifRsp.Error
      ? 'BLKIF_RSP_ERROR'
      : s === BlkifRsp.EOpNotSupp
        ? 'BLKIF_RSP_EOPNOTSUPP'
        : `status ${s}`;
}

/** `queues` worker threads, each with its own queue, writing and reading back its own region at once. */
async function everyQueue(ctx: CheckContext, queues: number): Promise<Verdict> {
  const ports: MessagePort[] = [];
  const workers: Worker[] = [];
  const results: Array<Promise<{ bad: string | null; requests: number }>> = [];
  try {
    for (let q = 0; q < queues; q++) {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(ctx.queueWorker, { workerData: { port: port2, index: q }, transferList: [port2] });
      workers.push(w);
      ports.push(port1);
      results.push(
        new Promise((resolve) => {
          w.once('message', resolve);
          // A thread that fails is this check's failure, never the process's.
          w.on('error', (err) => resolve({ bad: `thread ${q}: ${err.message}`, requests: 0 }));
        }),
      );
    }
    const dev = await openThreadedDevice({ platform: ctx.platform, vdev: ctx.vdev, threads: ports, timeoutMs: ctx.timeoutMs });
    try {
      const rs = await Promise.all(results);
      const bad = rs.findIndex((r) => r.bad !== null);
      if (bad >= 0) return fail(`queue ${bad}: ${rs[bad]!.bad}`);
      return pass(`${queues} queues at once: ${rs.map((r) => r.requests).join(' + ')} requests`);
    } finally {
      await dev.close();
    }
  } finally {
    await Promise.all(workers.map((w) => w.terminate()));
  }
}

export const CHECKS: readonly Check[] = [...NEGOTIATION, ...CORRECTNESS];
