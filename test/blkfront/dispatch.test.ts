/**
 * Which queue a piece goes to: the first until about 1 MiB is in flight
 * there, then the least loaded; a device buffer's own queue with persistent
 * grants. And, end to end on the simulated host, that small I/O at the
 * defaults stays on one ring while large I/O spreads over both.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { QueueChooser, SPREAD_AT } from '../../src/blkfront/submit.js';
import type { BlkQueue } from '../../src/blkfront/queue.js';
import type { IoOp } from '../../src/blkfront/request.js';
import { openBlockDevice, type BlockDevice } from '../../src/index.js';
import { createSimHost, type SimHost } from '../../src/sim/index.js';

const queues = (...loads: number[]) =>
  loads.map((load, i) => ({ load, index: i, stats: { responses: 0, interrupts: 0 } }) as unknown as BlkQueue);
const op = (pages: number, home: number | null = null) => ({ pages, done: { region: home === null ? null : { home } } }) as unknown as IoOp;
const index = (q: BlkQueue) => (q as unknown as { index: number }).index;

describe('queue choice', () => {
  it('keeps to the first queue while its load stays under SPREAD_AT', () => {
    const c = new QueueChooser();
    expect(index(c.choose(queues(0, 0), op(1), true))).toBe(0);
    expect(index(c.choose(queues(SPREAD_AT - 2, 0), op(1), true))).toBe(0);
  });

  it('spreads to the least loaded once the first is full, round robin among equals', () => {
    const c = new QueueChooser();
    expect(index(c.choose(queues(SPREAD_AT, 10, 4), op(256), true))).toBe(2);
    const picks = [0, 1, 2, 3].map(() => index(c.choose(queues(SPREAD_AT, SPREAD_AT, SPREAD_AT), op(1), true)));
    expect(new Set(picks).size).toBe(3);
  });

  it('spreads when the first ring comes back about one response per wake-up, and tries one ring again later', () => {
    const c = new QueueChooser();
    const qs = queues(0, 0);
    const stats = (qs[0] as unknown as { stats: { responses: number; interrupts: number } }).stats;
    const window = (perWakeup: number) => {
      const picks = new Set<number>();
      for (let i = 0; i < 512; i++) {
        stats.responses++;
        if (i % perWakeup === 0) stats.interrupts++;
        picks.add(index(c.choose(qs, op(1), true)));
      }
      return picks;
    };
    expect(window(30)).toEqual(new Set([0])); // batches of 30: one ring
    expect(c.spread).toBe(false);
    window(1); // the backend answers one at a time
    expect(c.spread).toBe(true);
    expect(window(1)).toEqual(new Set([0, 1]));
    let windows = 0;
    while (c.spread && windows < 200) {
      window(30);
      windows++;
    }
    expect(c.spread).toBe(false);
    expect(windows).toBeGreaterThan(100);
  });

  it('after a reconnect (new queues, counts from zero) it counts again before judging', () => {
    const c = new QueueChooser();
    const run = (qs: BlkQueue[], perWakeup: number) => {
      const stats = (qs[0] as unknown as { stats: { responses: number; interrupts: number } }).stats;
      for (let i = 0; i < 512; i++) {
        stats.responses++;
        if (i % perWakeup === 0) stats.interrupts++;
        c.choose(qs, op(1), true);
      }
    };
    const before = queues(0, 0);
    for (let w = 0; w < 4; w++) run(before, 30);
    const after = queues(0, 0); // the reconnect's queues
    run(after, 1);
    expect(c.spread).toBe(false); // its first window only sets where counting starts
    run(after, 1);
    expect(c.spread).toBe(true);
  });

  it("sends a device buffer's piece to its own queue with persistent grants, and by load without", () => {
    const c = new QueueChooser();
    expect(index(c.choose(queues(0, 500), op(1, 1), true))).toBe(1);
    expect(index(c.choose(queues(0, 500), op(1, 1), false))).toBe(0);
  });
});

describe('dispatch on the simulated host', () => {
  let host: SimHost | undefined;
  let dev: BlockDevice | undefined;
  afterEach(async () => {
    await dev?.close();
    await host?.close();
    dev = host = undefined;
  });

  it('at the defaults, 4 KiB I/O 32 in flight uses one ring and 1 MiB I/O 8 in flight uses both', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 32 << 20 });
    dev = await openBlockDevice({ platform: host.guest, vdev: disk.vdev });
    expect(dev.info.features.queues).toBe(2);
    const perQueue = () => disk.stats().requestsByQueue;
    const small = Array.from({ length: 32 }, (_, i) => dev!.readInto(i * 4096, Buffer.alloc(4096)));
    await Promise.all(small);
    const afterSmall = perQueue();
    expect(afterSmall[1]).toBe(0);
    const large = Array.from({ length: 8 }, (_, i) => dev!.readInto(i << 20, Buffer.alloc(1 << 20)));
    await Promise.all(large);
    const afterLarge = perQueue();
    expect(afterLarge[1]! - afterSmall[1]!).toBeGreaterThan(0);
    expect(afterLarge[0]! - afterSmall[0]!).toBeGreaterThan(0);
  });

  it('device buffers fill one queue (4 MiB of them) before the next: 4 KiB ones share a ring, 1 MiB ones spread', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 32 << 20 });
    dev = await openBlockDevice({ platform: host.guest, vdev: disk.vdev });
    const perQueue = () => disk.stats().requestsByQueue;
    const small = Array.from({ length: 32 }, () => dev!.allocBuffer(4096));
    await Promise.all(small.map((b, i) => dev!.readInto(i * 4096, b)));
    const afterSmall = perQueue();
    expect(afterSmall[1]).toBe(0);
    const large = Array.from({ length: 8 }, () => dev!.allocBuffer(1 << 20));
    await Promise.all(large.map((b, i) => dev!.readInto(i << 20, b)));
    const afterLarge = perQueue();
    expect(afterLarge[0]! - afterSmall[0]!).toBeGreaterThan(0);
    expect(afterLarge[1]! - afterSmall[1]!).toBeGreaterThan(0);
    expect(dev.stats().zeroCopy).toBe(40);
  });
});
