import { hypervisor } from '../helpers/hv.js';
import { beforeEach, describe, expect, it } from 'vitest';
import { GrantPool } from '../../src/gnttab/pool.js';
import { Semaphore } from '../../src/gnttab/semaphore.js';
import { PAGE_SIZE } from '../../src/wire/page.js';
import { SimHypervisor } from '../../src/sim/host/hypervisor.js';
import { SimGrantMapper, SimGrantSharer } from '../../src/sim/host/grants.js';
import { isXenError } from '../../src/errors.js';

let hv: SimHypervisor;
let sharer: SimGrantSharer;
let backend: SimGrantMapper;

beforeEach(() => {
  hv = hypervisor([16, 64], [256, 128]);
  sharer = new SimGrantSharer(hv, 1);
  backend = new SimGrantMapper(hv, 0);
});

const tick = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('Semaphore', () => {
  it('serves waiters strictly in order: a small request does not pass a big one', async () => {
    const s = new Semaphore(4);
    await s.acquire(4);
    const order: string[] = [];
    const big = s.acquire(3).then(() => order.push('big'));
    const small = s.acquire(1).then(() => order.push('small'));
    expect(s.tryAcquireUpTo(1)).toBe(0); // no barging past the queue
    s.release(1);
    await tick();
    expect(order).toEqual([]); // 1 free, but the head wants 3
    s.release(3);
    await Promise.all([big, small]);
    expect(order).toEqual(['big', 'small']);
    expect(s.available).toBe(0);
  });

  it('an aborted waiter leaves the queue and lets the next one through', async () => {
    const s = new Semaphore(1);
    await s.acquire(1);
    const ac = new AbortController();
    const first = s.acquire(2, ac.signal);
    const second = s.acquire(1);
    ac.abort(new Error('gave up'));
    await expect(first).rejects.toThrow('gave up');
    s.release(1);
    await second;
    expect(s.waiting).toBe(0);
  });

  it('close() rejects waiters and later acquires', async () => {
    const s = new Semaphore(0);
    const w = s.acquire(1);
    s.close(new Error('gone'));
    await expect(w).rejects.toThrow('gone');
    await expect(s.acquire(1)).rejects.toThrow('gone');
    expect(s.tryAcquireUpTo(1)).toBe(0);
  });
});

describe('GrantPool', () => {
  it('shares its pages up front in one call and lends them with their grant refs', () => {
    const pool = new GrantPool(sharer, 0, { pages: 8 });
    expect(sharer.stats()).toMatchObject({ shareCalls: 1, sharedPages: 8 });
    const lease = pool.take(3)!;
    expect(lease.pooled).toBe(3);
    expect(lease.pages.every((p) => p.length === PAGE_SIZE)).toBe(true);
    // The backend maps the refs and sees the very bytes the frontend wrote.
    lease.pages[2]![100] = 0xab;
    const m = backend.map(1, lease.refs[2]!, true);
    expect(m.bytes[100]).toBe(0xab);
    backend.unmap(m);
    pool.release(lease);
    expect(pool.stats()).toMatchObject({ hits: 3, fallbacks: 0, inUse: 0, highWater: 3, size: 8 });
    expect(sharer.stats().shareCalls).toBe(1); // no grant operation per request
  });

  it('falls back to fresh grants when empty, and unshares them on release', () => {
    const pool = new GrantPool(sharer, 0, { pages: 4 });
    const a = pool.take(3)!;
    const b = pool.take(3)!; // 1 pooled + 2 fresh
    expect(b.pooled).toBe(1);
    expect(pool.stats()).toMatchObject({ hits: 4, fallbacks: 2, inUse: 4, freshInUse: 2 });
    expect(sharer.stats().sharedPages).toBe(6);
    const freshRef = b.refs[2]!;
    // Fresh grants are real grants too.
    backend.unmap(backend.map(1, freshRef, true));
    pool.release(b);
    expect(sharer.stats().sharedPages).toBe(4); // the fresh pages are gone
    expect(() => backend.map(1, freshRef, false)).toThrow(/not in use/);
    pool.release(a);
    expect(pool.stats()).toMatchObject({ inUse: 0, freshInUse: 0 });
  });

  it('read-only fresh grants refuse a writable map', () => {
    const pool = new GrantPool(sharer, 0, { pages: 0 });
    const lease = pool.take(1, false)!;
    expect(() => backend.map(1, lease.refs[0]!, true)).toThrow(/read-only/);
    backend.unmap(backend.map(1, lease.refs[0]!, false));
    pool.release(lease);
  });

  it('returned pages are reused warmest first', () => {
    const pool = new GrantPool(sharer, 0, { pages: 4 });
    const a = pool.take(1)!;
    const ref = a.refs[0];
    pool.release(a);
    expect(pool.take(1)!.refs[0]).toBe(ref);
  });

  it('without fallback, an empty pool makes takers wait, in order, instead of failing', async () => {
    const pool = new GrantPool(sharer, 0, { pages: 4, fallback: false });
    const all = pool.take(4)!;
    expect(pool.take(1)).toBeNull();
    const order: number[] = [];
    const w1 = pool.acquire(2).then((l) => (order.push(1), l));
    const w2 = pool.acquire(1).then((l) => (order.push(2), l));
    await tick();
    expect(order).toEqual([]);
    pool.release(all);
    const [l1, l2] = await Promise.all([w1, w2]);
    expect(order).toEqual([1, 2]);
    expect(l1.pooled + l2.pooled).toBe(3);
    expect(pool.stats()).toMatchObject({ waits: 2, fallbacks: 0 });
    await expect(pool.acquire(5)).rejects.toMatchObject({ code: 'XEN_EINVAL' });
  });

  it('caps fresh pages at maxFallbackPages, then waits for pooled ones', async () => {
    const pool = new GrantPool(sharer, 0, { pages: 2, maxFallbackPages: 2 });
    const a = pool.take(4)!; // 2 pooled + 2 fresh
    expect(pool.take(1)).toBeNull();
    const waiting = pool.acquire(1);
    pool.release(a);
    expect((await waiting).pooled).toBe(1);
  });

  it('keeping fresh pages, grows to maxPages and then waits instead of sharing and unsharing per request', async () => {
    const pool = new GrantPool(sharer, 0, { pages: 2, keepFresh: true, maxPages: 6 });
    const a = pool.take(5)!; // 2 pooled + 3 fresh, all keepable
    expect(a.pooled).toBe(2);
    expect(pool.take(2)).toBeNull(); // 2 + 3 + 2 > 6: they could not be kept
    const b = pool.take(1)!; // 2 + 3 + 1 = 6: the last page the pool may keep
    pool.release(a);
    pool.release(b);
    expect(pool.stats()).toMatchObject({ size: 6, kept: 4, fallbacks: 4 });
    const shared = sharer.stats().sharedPages;
    const c = pool.take(6)!;
    expect(pool.take(1)).toBeNull(); // at its largest: no fresh page at all
    const waiting = pool.acquire(1);
    pool.release(c);
    expect((await waiting).pooled).toBe(1);
    expect(sharer.stats().sharedPages).toBe(shared);
    expect(pool.stats().fallbacks).toBe(4);
  });

  it('falls back to waiting when the grant table itself is full', async () => {
    const small = new SimHypervisor();
    small.createDomain({ domid: 0, pages: 4, grants: 4 });
    small.createDomain({ domid: 1, pages: 64, grants: 12 }); // 8 reserved, 4 usable
    const s = new SimGrantSharer(small, 1);
    const pool = new GrantPool(s, 0, { pages: 2 });
    const a = pool.take(4)!;
    expect(pool.take(1)).toBeNull(); // XEN_ENOSPC from the sharer becomes "wait"
    const waiting = pool.acquire(1);
    pool.release(a);
    await waiting;
  });

  it('close() with grants in flight: waiters fail, the pool is unshared once every lease is back', async () => {
    const pool = new GrantPool(sharer, 0, { pages: 2, fallback: false });
    const lease = pool.take(2)!;
    const waiter = pool.acquire(1);
    const mapped = backend.map(1, lease.refs[0]!, true);
    let done = false;
    const closing = pool.close().then(() => (done = true));
    await expect(waiter).rejects.toMatchObject({ code: 'XEN_CLOSED' });
    expect(() => pool.take(1)).toThrow(expect.objectContaining({ code: 'XEN_CLOSED' }));
    await tick();
    expect(done).toBe(false); // a lease is still out
    expect(sharer.stats().sharedPages).toBe(2);
    pool.release(lease);
    await closing;
    expect(sharer.stats().sharedPages).toBe(0);
    // The backend still maps one page: its grant end waits for the unmap, as Xen requires.
    expect(sharer.pendingEnds).toBe(1);
    backend.unmap(mapped);
    await new Promise((r) => setTimeout(r, 30));
    expect(sharer.pendingEnds).toBe(0);
    expect(sharer.frames.free).toBe(255);
  });

  it('a pool torn down after its sharer closed releases quietly', async () => {
    const pool = new GrantPool(sharer, 0, { pages: 2 });
    const lease = pool.take(3)!; // 2 pooled + 1 fresh
    sharer.close(); // the platform went first and unshared everything
    expect(sharer.stats().sharedPages).toBe(0);
    pool.release(lease);
    await pool.close();
    expect(() => sharer.share(0, 1, true)).toThrow(expect.objectContaining({ code: 'XEN_CLOSED' }));
  });

  it('rejects bad arguments and double release', () => {
    const pool = new GrantPool(sharer, 0, { pages: 1 });
    expect(() => pool.take(0)).toThrow(expect.objectContaining({ code: 'XEN_EINVAL' }));
    expect(() => new GrantPool(sharer, 0, { pages: -1 })).toThrow(expect.objectContaining({ code: 'XEN_EINVAL' }));
    const l = pool.take(1)!;
    pool.release(l);
    try {
      pool.release(l);
      expect.unreachable();
    } catch (err) {
      expect(isXenError(err, 'XEN_EINVAL')).toBe(true);
    }
    expect(pool.stats().inUse).toBe(0);
  });
});

describe('GrantPool for an untrusted backend (zero)', () => {
  it('pages are zeroed before any ref reaches a request, whatever the sharer hands out: pooled ones and fresh ones', async () => {
    // A sharer whose pages come back holding old data (gntalloc zeroes its pages; not every platform need).
    const dirtySharer = Object.create(sharer) as SimGrantSharer;
    dirtySharer.share = (domid: number, count: number, writable: boolean) => {
      const p = sharer.share(domid, count, writable);
      p.bytes.fill(0xab);
      return p;
    };
    const plain = new GrantPool(dirtySharer, 0, { pages: 4 });
    const l0 = plain.take(8)!;
    expect(l0.pages.every((pg) => pg.every((b) => b === 0xab))).toBe(true); // the premise
    plain.release(l0);
    await plain.close();
    const pool = new GrantPool(dirtySharer, 0, { pages: 4, zero: true });
    const lease = pool.take(8)!; // 4 pooled, 4 fresh
    expect([lease.pages.length, lease.pooled]).toEqual([8, 4]);
    for (const pg of lease.pages) expect(pg.every((b) => b === 0)).toBe(true);
    pool.release(lease);
    await pool.close();
  });
});
