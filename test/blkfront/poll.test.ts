/**
 * The optional busy poll of the response ring (`pollMicros`): responses found
 * without an event, the ring asking for no event while a poll is under way,
 * a poll that gives up falling back to the event, and the event loop still
 * getting its turns while the poll keeps finding work.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { openBlockDevice } from '../../src/index.js';
import { diskFixture, expectBytes, pattern, type DiskFixture } from '../helpers/blk.js';

let fx: DiskFixture | undefined;
afterEach(async () => {
  await fx?.close();
  fx = undefined;
});

/** One write then its read-back at a time, `n` times, each checked. */
async function oneInFlight(f: DiskFixture, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    const off = (i * 7 * 4096) % (f.dev.info.size - 8192);
    const data = pattern(off, 8192, i + 1);
    await f.dev.write(off, data);
    expectBytes(await f.dev.read(off, 8192), data);
  }
}

describe('busy poll of the response ring', () => {
  it('is off by default, and a negative or fractional time is refused', async () => {
    fx = await diskFixture({ size: 1 << 20 });
    await oneInFlight(fx, 10);
    const s = fx.dev.stats();
    expect([s.polls, s.pollMisses]).toEqual([0, 0]);
    expect(s.interrupts).toBeGreaterThan(0);
    for (const pollMicros of [-1, 2.5]) {
      await expect(openBlockDevice({ platform: fx.host.guest, vdev: fx.disk.vdev, pollMicros })).rejects.toMatchObject({
        code: 'BLKIF_EINVAL',
        message: expect.stringContaining('pollMicros') as unknown,
      });
    }
  });

  it('finds responses with 1 in flight without waiting for the event, data intact', async () => {
    // A long budget: the backend's worker answers in microseconds, so a miss means it was not scheduled for 50 ms.
    fx = await diskFixture({ size: 1 << 20 }, { pollMicros: 50_000, queues: 1 });
    await oneInFlight(fx, 200);
    const s = fx.dev.stats();
    expect(s.responses).toBe(400);
    // Almost every response was found by the poll; the event (armed only when a poll gives up) found few.
    expect(s.polls).toBeGreaterThan(300);
    expect(s.interrupts).toBeLessThan(100);
    expect(s.polls + s.interrupts).toBeGreaterThanOrEqual(400 - s.pollMisses);
  });

  it('falls back to the event when the backend is slower than the poll', async () => {
    fx = await diskFixture({ size: 1 << 20 }, { pollMicros: 20, queues: 1 });
    fx.disk.setDelay(3000);
    await oneInFlight(fx, 20);
    const s = fx.dev.stats();
    expect(s.responses).toBe(40);
    expect(s.pollMisses).toBeGreaterThan(20);
    expect(s.interrupts).toBeGreaterThan(20);
  });

  it('keeps the event loop turning while every poll finds work', async () => {
    fx = await diskFixture({ size: 1 << 20 }, { pollMicros: 50_000, queues: 1 });
    let fired = false;
    const timer = setTimeout(() => (fired = true), 30);
    let n = 0;
    // 32 in flight, each replaced as it completes: the poll always has work, yet the timer must fire.
    const worker = async (k: number): Promise<void> => {
      while (!fired && n < 200_000) {
        await fx!.dev.read((k * 4096) % (1 << 20), 4096);
        n++;
      }
    };
    await Promise.all(Array.from({ length: 32 }, (_, k) => worker(k)));
    clearTimeout(timer);
    expect(fired).toBe(true);
    expect(fx.dev.stats().polls).toBeGreaterThan(0);
  });
});
