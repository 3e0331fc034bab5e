/**
 * blkcheck --hostile: requests the protocol forbids, each on a connection
 * of its own with the safety off (raw.ts). The first MiB of the disk holds
 * a guard pattern, written before the first check; every hostile request
 * aims inside it, and whatever a hostile request may legitimately write is
 * that same pattern, so after each check the guard must be exactly as it
 * was: anything else is a write outside the request, or a torn one. Then
 * the backend must still serve: on another queue of the same connection
 * (when it offers several), on a fresh connection to the same vbd, and on
 * another vbd when there is one.
 */
import { openBlockDevice } from '../../blkfront/device.js';
import {
  BLKIF_MAX_SEGMENTS_PER_REQUEST,
  BLKIF_NATIVE_ABI,
  BLKIF_SEGMENT_SIZE,
  SEGS_PER_INDIRECT_FRAME,
  setIndirectGref,
  setIndirectHeader,
  BlkifOp,
  BlkifRsp,
  SECTORS_PER_PAGE,
  segmentOffset,
  setRequestHeader,
  setSegment,
} from '../../wire/blkif.js';
import { PAGE_SIZE } from '../../wire/page.js';
import { BlkifKey } from '../../wire/blkif_keys.js';
import { RawConnection, type Outcome } from './raw.js';
import { said, type Check, type CheckContext, type Verdict } from './checks.js';
import { differs, fill } from './pattern.js';

const GUARD_BYTES = 1 << 20;
const GUARD_SEED = 0x6a09e667;
/** Where the hostile requests aim: inside the guard. */
const AIM = 64;

/** The guard pattern of `sectors` 512-byte sectors from `sector`, for a page a request may write from. */
const guardBytes = (page: Uint8Array, sector: number): Uint8Array => fill(page, sector * 512, GUARD_SEED);

/** What one hostile check does on its connection; returns the outcome and whether OKAY is acceptable for it. */
interface Attack {
  id: string;
  rule: string;
  /** OKAY would mean the backend claims to have done what it cannot have. */
  okayIsWrong: boolean;
  /** Why it cannot be sent to this backend (a feature it does not offer), or null. */
  offered?(keys: Map<string, string>): string | null;
  run(c: RawConnection): Promise<Seen>;
}

/** Indirect requests need feature-max-indirect-segments. */
const indirectOffered = (keys: Map<string, string>): string | null =>
  Number(keys.get('feature-max-indirect-segments') ?? 0) > BLKIF_MAX_SEGMENTS_PER_REQUEST ? null : 'no indirect descriptors';

/**
 * One indirect request on queue 0: `nr` segments described in `pages` indirect pages (each
 * segment the whole of `data`), or `grefs` for the indirect pages as given; what came of it.
 */
function indirect(
  c: RawConnection,
  op: number,
  nr: number,
  grefs: number[],
  segPages: Uint8Array[],
  data: number,
  beforePush?: () => void,
): Promise<Outcome> {
  const { view, off } = c.slot();
  setIndirectHeader(BLKIF_NATIVE_ABI, view, off, op, nr, c.handle, 5, 0, AIM);
  grefs.forEach((g, i) => setIndirectGref(BLKIF_NATIVE_ABI, view, off, i, g));
  let k = 0;
  for (const page of segPages) {
    const v = new DataView(page.buffer, page.byteOffset, page.byteLength);
    for (let i = 0; i < SEGS_PER_INDIRECT_FRAME && k < nr; i++, k++) setSegment(v, i * BLKIF_SEGMENT_SIZE, data, 0, 7);
  }
  beforePush?.();
  c.produced();
  c.push();
  return c.outcome(1);
}

/** What an attack saw: the backend's outcome, and what it found wrong itself (mixed data, no answer where one was due). */
type Seen = Outcome & { wrong?: string; note?: string };

function request(
  c: RawConnection,
  op: number,
  sector: number,
  segs: Array<[gref: number, first: number, last: number]>,
  nr = segs.length,
  q = 0,
  id = 1,
): void {
  const { view, off } = c.slot(q);
  setRequestHeader(BLKIF_NATIVE_ABI, view, off, op, nr, c.handle, id, 0, sector);
  segs.forEach(([g, f, l], i) => setSegment(view, segmentOffset(BLKIF_NATIVE_ABI, off, i), g, f, l));
  c.produced(q);
}

/** One request on queue 0, pushed; what came of it. */
function answer(
  c: RawConnection,
  op: number,
  sector: number,
  segs: Array<[gref: number, first: number, last: number]>,
  nr = segs.length,
): Promise<Outcome> {
  request(c, op, sector, segs, nr);
  c.push();
  return c.outcome(1);
}

const ATTACKS: Attack[] = [
  {
    id: 'zero-segments',
    rule: 'blkif.h: a read or write carries 1..11 segments (here 0)',
    okayIsWrong: false,
    run: async (c) => {
      return answer(c, BlkifOp.Read, AIM, [], 0);
    },
  },
  {
    id: 'too-many-segments',
    rule: 'blkif.h: at most BLKIF_MAX_SEGMENTS_PER_REQUEST (11) direct segments (here 12)',
    okayIsWrong: false,
    run: async (c) => {
      const p = c.share(1);
      // The slot holds 11 descriptors; the count says 12, so a backend that believes it reads past the request.
      request(
        c,
        BlkifOp.Read,
        AIM,
        Array.from({ length: BLKIF_MAX_SEGMENTS_PER_REQUEST }, () => [p.refs[0]!, 0, 7]),
        12,
      );
      c.push();
      return c.outcome(1);
    },
  },
  {
    id: 'first-after-last',
    rule: 'blkif.h: first_sect <= last_sect (here 5 > 2)',
    okayIsWrong: true,
    run: async (c) => {
      const p = c.share(1);
      return answer(c, BlkifOp.Write, AIM, [[p.refs[0]!, 5, 2]]);
    },
  },
  {
    id: 'last-past-page',
    rule: 'blkif.h: last_sect <= 7, within the page (here 8)',
    okayIsWrong: true,
    run: async (c) => {
      const p = c.share(1);
      return answer(c, BlkifOp.Read, AIM, [[p.refs[0]!, 0, 8]]);
    },
  },
  {
    id: 'past-the-end',
    rule: 'blkif.h: sector_number + sectors within the disk (here the last sector and one past it)',
    okayIsWrong: true,
    run: async (c) => {
      const p = c.share(1);
      return answer(c, BlkifOp.Read, c.info.sectors - 1, [[p.refs[0]!, 0, 1]]);
    },
  },
  {
    id: 'unknown-operation',
    rule: 'blkif.h: an operation the backend does not know (here 99) is refused',
    okayIsWrong: false,
    run: async (c) => {
      const p = c.share(1);
      return answer(c, 99, AIM, [[p.refs[0]!, 0, 7]]);
    },
  },
  {
    id: 'unshared-grant',
    rule: 'grant_table.h: a read into a grant the frontend has ended',
    okayIsWrong: true,
    run: async (c) => {
      const p = c.share(1);
      const ref = p.refs[0]!;
      c.unshare(p);
      return answer(c, BlkifOp.Read, AIM, [[ref, 0, 7]]);
    },
  },
  {
    id: 'read-only-grant',
    rule: 'grant_table.h: a read into a read-only grant (the backend would have to write it)',
    okayIsWrong: true,
    run: async (c) => {
      const p = c.share(1, false);
      return answer(c, BlkifOp.Read, AIM, [[p.refs[0]!, 0, 7]]);
    },
  },
  {
    id: 'id-twice',
    rule: "blkif.h: ids are the frontend's; one in flight twice must not mix the two requests' data",
    okayIsWrong: false,
    run: async (c) => {
      const p = c.share(2);
      p.bytes.fill(0xcc);
      request(c, BlkifOp.Read, AIM, [[p.refs[0]!, 0, 7]], 1, 0, 42);
      request(c, BlkifOp.Read, AIM + SECTORS_PER_PAGE, [[p.refs[1]!, 0, 7]], 1, 0, 42);
      c.push();
      const o = await c.outcome(2);
      // Each page must hold its own sector's data (or be untouched, if refused).
      for (const [i, sector] of [AIM, AIM + SECTORS_PER_PAGE].entries()) {
        const page = p.bytes.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE);
        const ok = o.responses.some((r) => r.status === BlkifRsp.Okay);
        if (ok && page.some((b) => b !== 0xcc) && differs(page, sector * 512, GUARD_SEED) !== null) {
          return { ...o, wrong: `page ${i} holds neither its sector's data nor what it held` };
        }
      }
      return o;
    },
  },
  {
    id: 'rewritten-after-push',
    rule: 'XSA-155: a request rewritten in the ring after the push is acted on as one consistent copy',
    okayIsWrong: false,
    run: async (c) => {
      // XSA-155's pattern: nr_segments read twice. Two versions of the slot differ only in that byte: 1 (valid)
      // and 12 (refused by a backend that checks its one copy). Every segment the slot holds names the page of
      // the guard's own bytes for the sector aimed at, so any copy, even one torn between the versions, writes
      // nothing but those bytes there, unless a backend checks the count in one read and uses it from another:
      // then it writes that page over the next 11 pages of the guard, or reads past the slot.
      const p = c.share(1);
      guardBytes(p.bytes, AIM);
      const { view, off } = c.slot();
      setRequestHeader(BLKIF_NATIVE_ABI, view, off, BlkifOp.Write, 1, c.handle, 9, 0, AIM);
      for (let i = 0; i < BLKIF_MAX_SEGMENTS_PER_REQUEST; i++) setSegment(view, segmentOffset(BLKIF_NATIVE_ABI, off, i), p.refs[0]!, 0, 7);
      const count = off + BLKIF_NATIVE_ABI.request.nrSegments;
      c.produced();
      c.push();
      // Flip the count as fast as this thread can while the backend reads the slot, then leave it valid.
      const until = performance.now() + 30;
      for (let n = 0; performance.now() < until; n++) view.setUint8(count, n % 2 === 0 ? BLKIF_MAX_SEGMENTS_PER_REQUEST + 1 : 1);
      view.setUint8(count, 1);
      return c.outcome(1);
    },
  },
  {
    id: 'indirect-too-many',
    rule: 'blkif.h: an indirect request carries at most feature-max-indirect-segments (here one more)',
    okayIsWrong: false,
    offered: indirectOffered,
    run: async (c) => {
      const max = c.info.features.indirectSegments;
      const pages = Math.ceil((max + 1) / SEGS_PER_INDIRECT_FRAME);
      const ind = c.share(pages);
      const data = c.share(1);
      const views = Array.from({ length: pages }, (_, i) => ind.bytes.subarray(i * PAGE_SIZE, (i + 1) * PAGE_SIZE));
      return indirect(c, BlkifOp.Read, max + 1, [...ind.refs], views, data.refs[0]!);
    },
  },
  {
    id: 'indirect-ended-page',
    rule: 'blkif.h, grant_table.h: an indirect request whose segment page is a grant the frontend has ended',
    okayIsWrong: true,
    offered: indirectOffered,
    run: async (c) => {
      const ind = c.share(1);
      const data = c.share(1);
      // The descriptors are written, then the page that holds them is taken back before the push.
      return indirect(c, BlkifOp.Read, BLKIF_MAX_SEGMENTS_PER_REQUEST + 1, [ind.refs[0]!], [ind.bytes], data.refs[0]!, () =>
        c.unshare(ind),
      );
    },
  },
  {
    id: 'indirect-bad-operation',
    rule: 'blkif.h: indirect_op is a read or a write (here a flush)',
    okayIsWrong: false,
    offered: indirectOffered,
    run: async (c) => {
      const ind = c.share(1);
      const data = c.share(1);
      return indirect(c, BlkifOp.FlushDiskcache, BLKIF_MAX_SEGMENTS_PER_REQUEST + 1, [ind.refs[0]!], [ind.bytes], data.refs[0]!);
    },
  },
  {
    id: 'req-prod-overflow',
    rule: "ring.h: req_prod more than a ring's worth past rsp_prod (RING_REQUEST_PROD_OVERFLOW): at most a ring's worth answered",
    okayIsWrong: false,
    run: async (c) => {
      // The slots hold whatever they held (zeros): a backend may refuse the lot (blkback stops the ring) or
      // take up to a ring's worth of them as requests (qdisk's RING_REQUEST_CONS_OVERFLOW); never more.
      const ring = c.rings[0]!;
      c.hold(true);
      const from = c.rspProd();
      c.setReqProd(from + ring.entries + 3);
      const o = await c.outcome(1, 0, 2000);
      const answered = (c.rspProd() - from) >>> 0;
      const seen: Seen = { ...o, responses: [] };
      if (answered > ring.entries) {
        return {
          ...seen,
          wrong: `${answered} responses for a ring of ${ring.entries}: it took every slot claimed, over responses not yet consumed`,
        };
      }
      return answered === 0 ? seen : { ...seen, note: `took ${answered} of the claimed slots as requests and answered them` };
    },
  },
  {
    id: 'notification-storm',
    rule: 'XSA-332: a storm of notifications with nothing new, then a request that must still be served',
    okayIsWrong: false,
    run: async (c) => {
      for (let i = 0; i < 20000; i++) c.notify();
      const p = c.share(1);
      request(c, BlkifOp.Read, AIM, [[p.refs[0]!, 0, 7]]);
      c.push();
      const o = await c.outcome(1);
      if (o.responses[0]?.status === BlkifRsp.Okay && differs(p.bytes, AIM * 512, GUARD_SEED) !== null)
        return { ...o, wrong: 'the read after the storm returned wrong data' };
      if (o.responses.length === 0 && o.left === null) return { ...o, wrong: 'the request after the storm was not answered' };
      return o;
    },
  },
  {
    id: 'responses-not-consumed',
    rule: "ring.h: a frontend that never consumes responses: the backend answers at most a ring's worth",
    okayIsWrong: false,
    run: async (c) => {
      const ring = c.rings[0]!;
      const p = c.share(1);
      c.hold(true);
      const from = c.rspProd();
      for (let i = 0; i < ring.entries; i++) request(c, BlkifOp.Read, AIM, [[p.refs[0]!, 0, 7]], 1, 0, i);
      c.push();
      await new Promise((r) => setTimeout(r, 1000));
      const answered = (c.rspProd() - from) >>> 0;
      c.hold(false);
      const o = await c.outcome(ring.entries);
      if (answered > ring.entries) return { ...o, wrong: `${answered} responses for ${ring.entries} requests` };
      if (o.responses.length === 0 && o.left === null) return { ...o, wrong: 'nothing answered with the ring full' };
      return o;
    },
  },
];

/** Whether the backend still serves on a fresh connection, the guard intact; null when it does, else what went wrong. */
async function stillServes(ctx: CheckContext): Promise<string | null> {
  const d = await openBlockDevice({ platform: ctx.platform, vdev: ctx.vdev, timeoutMs: ctx.timeoutMs }).catch(
    (err: unknown) => err as Error,
  );
  if (d instanceof Error) return `no new connection: ${d.message}`;
  try {
    const bad = differs(await d.read(0, GUARD_BYTES), 0, GUARD_SEED);
    if (bad !== null) return `the guard changed: ${bad}`;
    const at = GUARD_BYTES + PAGE_SIZE;
    await d.write(at, fill(new Uint8Array(65536), at, 3));
    return differs(await d.read(at, 65536), at, 3);
  } catch (err) {
    return `I/O on a new connection failed: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    await d.close();
  }
}

/** The other vbd reads the same twice. */
async function otherServes(ctx: CheckContext): Promise<string | null> {
  if (ctx.other === null) return null;
  const d = await openBlockDevice({ platform: ctx.platform, vdev: ctx.other, timeoutMs: ctx.timeoutMs }).catch(
    (err: unknown) => err as Error,
  );
  if (d instanceof Error) return `the other vbd ${ctx.other}: ${d.message}`;
  try {
    const a = await d.read(0, 65536);
    const b = await d.read(0, 65536);
    return Buffer.compare(a, b) === 0 ? null : `the other vbd ${ctx.other} read differently twice`;
  } catch (err) {
    return `the other vbd ${ctx.other}: ${err instanceof Error ? err.message : String(err)}`;
  } finally {
    await d.close();
  }
}

/** With two queues, the second still answers a plain read after the first was attacked. */
async function otherQueue(c: RawConnection, o: Outcome): Promise<string | null> {
  if (c.rings.length < 2 || o.left !== null) return null;
  const p = c.share(1);
  request(c, BlkifOp.Read, AIM, [[p.refs[0]!, 0, 7]], 1, 1, 77);
  c.push(1);
  const r = await c.outcome(1, 1);
  if (r.left !== null) return null; // the backend disconnected the whole device: allowed
  if (r.responses[0]?.status !== BlkifRsp.Okay) return `queue 1 after the attack on queue 0: ${said(r)}`;
  return differs(p.bytes, AIM * 512, GUARD_SEED) === null ? null : 'queue 1 read wrong data';
}

/** Lays the guard down (once, before the first hostile check). */
export async function layGuard(ctx: CheckContext): Promise<void> {
  const d = await openBlockDevice({ platform: ctx.platform, vdev: ctx.vdev, timeoutMs: ctx.timeoutMs });
  try {
    await d.write(0, fill(new Uint8Array(GUARD_BYTES), 0, GUARD_SEED));
  } finally {
    await d.close();
  }
}

function verdictOf(a: Attack, o: Seen, after: Array<string | null>): Verdict {
  const what = said(o);
  const broken = after.find((x) => x !== null);
  if (o.ringError !== null) return { result: 'fail', detail: `the backend broke the ring: ${o.ringError}` };
  if (o.wrong !== undefined)
    return { result: 'fail', detail: o.responses.length > 0 || o.left !== null ? `answered ${what}, and ${o.wrong}` : o.wrong };
  if (broken !== undefined) return { result: 'fail', detail: `answered ${what}; then ${broken}` };
  if (a.okayIsWrong && o.responses.some((r) => r.status === BlkifRsp.Okay))
    return { result: 'fail', detail: 'answered BLKIF_RSP_OKAY to what it cannot have done' };
  return { result: 'pass', detail: `${o.note ?? `answered ${what}`}; still serving` };
}

export const HOSTILE: readonly Check[] = ATTACKS.map((a): Check => ({
  id: a.id,
  group: 'robustness',
  rule: a.rule,
  run: async (ctx) => {
    const why = a.offered?.(ctx.keys) ?? null;
    if (why !== null) return { result: 'not offered', detail: why };
    const queues = Math.min(Number(ctx.keys.get(BlkifKey.multiQueueMaxQueues) ?? 1), 2);
    const c = await RawConnection.open(ctx.platform, ctx.vdev, { queues, timeoutMs: ctx.timeoutMs });
    let o: Seen;
    let q: string | null;
    try {
      o = await a.run(c);
      q = await otherQueue(c, o);
    } finally {
      await c.close();
    }
    return verdictOf(a, o, [q, await stillServes(ctx), await otherServes(ctx)]);
  },
}));
