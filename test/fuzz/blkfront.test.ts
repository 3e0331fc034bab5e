/**
 * Property suite for the block frontend, seeded (the seed is printed;
 * FUZZ_SEED replays it) and bounded. Every case ends in success or a typed
 * XenError: no TypeError, no crash, no hang, and no acknowledged write lost.
 * - API arguments of every kind to every call;
 * - hostile backend keys at connect;
 * - hostile responses on the ring (the simulated blkback's faults), with the
 *   acknowledged data checked afterwards through a fresh connection;
 * - hostile backend state sequences while I/O runs;
 * - a write-verify workload across backend restarts that change the limits
 *   (ring pages, queues, indirect segments, persistent grants) each time.
 */
import { describe, expect, it } from 'vitest';
import { XenError, openBlockDevice, type BlockDevice } from '../../src/index.js';
import { createSimHost, type SimFault } from '../../src/sim/index.js';
import { diskFixture, expectBytes, firstDifference, pattern } from '../helpers/blk.js';
import { fuzz, type Fuzz } from '../helpers/fuzz.js';

/** Runs `call` and records how it ended: fine, or a XenError's code. Anything else fails the test. */
async function settle(f: Fuzz, what: string, call: () => unknown): Promise<boolean> {
  try {
    await call();
    f.tally.add('ok');
    return true;
  } catch (err) {
    expect(err, `seed ${f.seed}: ${what} threw ${String(err)}`).toBeInstanceOf(XenError);
    f.tally.add((err as XenError).code);
    return false;
  }
}

function randomArg(f: Fuzz, size: number): unknown {
  return f.pick<() => unknown>([
    () => 0,
    () => 512,
    () => 4096,
    () => f.int(size),
    () => size,
    () => size - 512,
    () => size + 4096,
    () => -512,
    () => 1.5,
    () => Number.NaN,
    () => Infinity,
    () => Number.MAX_SAFE_INTEGER,
    () => 2 ** 60,
    () => '4096',
    () => null,
    () => undefined,
    () => ({}),
    () => [512],
    () => 4096n,
  ])();
}

function randomBuffer(f: Fuzz, dev: BlockDevice): unknown {
  return f.pick<() => unknown>([
    () => new Uint8Array(512 * (1 + f.int(16))),
    () => new Uint8Array(4096 * (1 + f.int(64))),
    () => new Uint8Array(0),
    () => new Uint8Array(1000),
    () => new Uint8Array(8192).subarray(100, 100 + 4096),
    () => new Uint16Array(2048),
    () => Buffer.alloc(4096),
    () => new ArrayBuffer(4096),
    () => 'data',
    () => null,
    () => undefined,
    () => {
      const b = new Uint8Array(4096);
      structuredClone(b.buffer, { transfer: [b.buffer] });
      return b;
    },
    () => dev.allocBuffer(4096 * (1 + f.int(8))),
  ])();
}

describe('fuzz: the block frontend', () => {
  it('API arguments: every call succeeds or fails with a typed error, and the disk keeps its data', async () => {
    const f = fuzz('blkfront API');
    const fx = await diskFixture({ size: 1 << 20 });
    try {
      const { dev } = fx;
      await dev.write(0, pattern(0, 1 << 20, 1));
      const size = dev.info.size;
      const pending: Array<Promise<boolean>> = [];
      for (const c of f.cases(3000, 4000)) {
        const a = randomArg(f, size);
        const b = randomArg(f, size);
        const kind = f.int(8);
        const what = `call ${c} kind ${kind}`;
        const p = settle(f, what, () => {
          switch (kind) {
            case 0:
              return dev.read(a as number, b as number);
            case 1:
              return dev.readInto(a as number, randomBuffer(f, dev) as Uint8Array);
            case 2:
              return dev
                .write(a as number, f.chance(0.5) ? new Uint8Array(512) : (randomBuffer(f, dev) as Uint8Array))
                .then(() => dev.write(0, pattern(0, 1 << 20, 1))); // put the pattern back (nothing else writes meanwhile)
            case 3:
              return dev.discard(a as number, b as number, f.pick([undefined, {}, { secure: true }, null, 'x']) as never);
            case 4:
              return dev.flush();
            case 5:
              return dev.allocBuffer(a as number);
            case 6:
              return dev.freeBuffer(randomBuffer(f, dev) as Uint8Array);
            default:
              return dev.readInto(a as number, new Uint8Array(512 * (1 + f.int(8))));
          }
        });
        pending.push(p);
        if (pending.length >= 32) await Promise.all(pending.splice(0));
      }
      await Promise.all(pending);
      // Discards may have zeroed parts; rewrite, then everything reads back.
      await dev.write(0, pattern(0, 1 << 20, 2));
      expectBytes(await dev.read(0, 1 << 20), pattern(0, 1 << 20, 2));
      f.report('calls', 'ok', 'BLKIF_EINVAL', 'BLKIF_ERANGE');
    } finally {
      await fx.close();
    }
  }, 30_000);

  it('hostile backend keys: open succeeds with sane geometry or fails typed; the vbd opens again afterwards', async () => {
    const f = fuzz('blkfront backend keys');
    const values = [
      '0',
      '1',
      '-1',
      '512',
      '4096',
      '3',
      '1536',
      '4294967808',
      '12884901888',
      '99999999999999999999',
      'x',
      '',
      ' 8 ',
      '0x200',
      '1e3',
      '65536',
      '131072',
      '4096.0',
    ];
    const keys = [
      'sector-size',
      'physical-sector-size',
      'sectors',
      'info',
      'feature-discard',
      'discard-granularity',
      'discard-alignment',
      'discard-secure',
      'feature-flush-cache',
      'feature-barrier',
      'feature-persistent',
      'feature-max-indirect-segments',
      'max-ring-page-order',
      'multi-queue-max-queues',
    ];
    const host = await createSimHost();
    try {
      for (const c of f.cases(40, 6000)) {
        const chosen: Record<string, string> = {};
        for (let i = 0, n = 1 + f.int(3); i < n; i++) chosen[f.pick(keys)] = f.pick(values);
        const disk = await host.addDisk({ vdev: 51712 + 16 * c, size: 1 << 20, keys: chosen });
        let dev: BlockDevice | undefined;
        const opened = await settle(f, JSON.stringify(chosen), async () => {
          dev = await openBlockDevice({ platform: host.guest, vdev: disk.vdev, timeoutMs: 2000, reconnectTimeoutMs: 1000 });
        });
        if (opened && dev !== undefined) {
          const info = dev.info;
          expect(Number.isSafeInteger(info.size) && info.size >= 0, JSON.stringify(chosen)).toBe(true);
          expect([512, 1024, 2048, 4096, 8192, 16384, 32768, 65536]).toContain(info.sectorSize);
          if (info.size >= info.sectorSize) {
            await settle(f, 'write', () => dev!.write(0, pattern(0, info.sectorSize, 3)));
            await settle(f, 'read', () => dev!.read(0, info.sectorSize));
          }
          await dev.close();
        }
        f.tally.add(opened ? 'opened' : 'refused');
        // Whatever happened, the vbd is left ready: with honest keys it opens.
        disk.reconfigure({ keys: {} });
        const again = await openBlockDevice({ platform: host.guest, vdev: disk.vdev, timeoutMs: 3000 });
        await again.write(0, pattern(0, 4096, 4));
        expectBytes(await again.read(0, 4096), pattern(0, 4096, 4));
        await again.close();
      }
      f.report('backends', 'opened', 'refused');
    } finally {
      await host.close();
    }
  }, 60_000);

  it('hostile responses: calls fail typed, and every acknowledged write is on the disk', async () => {
    const f = fuzz('blkfront responses');
    const kinds: Array<SimFault['kind']> = ['error', 'eopnotsupp', 'unknown-id', 'duplicate-id', 'wrong-op', 'rsp-overflow'];
    let acked = 0;
    for (const c of f.cases(30, 6000)) {
      const fx = await diskFixture({ size: 1 << 20 }, { queues: 1 + f.int(2), timeoutMs: 2000 });
      try {
        const { dev, disk, host } = fx;
        const gen = new Map<number, number>();
        disk.inject({ kind: f.pick(kinds), ops: [f.pick(['read', 'write', 'flush', 'discard'] as const)], count: 1 + f.int(3) });
        const calls = Array.from({ length: 16 }, (_, i) => {
          const block = f.int(64);
          const g = c * 100 + i;
          return f.chance(0.6)
            ? settle(f, 'write', () => dev.write(block * 16384, pattern(block * 16384, 16384, g))).then((ok) => {
                if (ok) gen.set(block, Math.max(gen.get(block) ?? 0, g));
              })
            : f.chance(0.5)
              ? settle(f, 'read', () => dev.read(block * 16384, 16384))
              : settle(f, 'flush', () => dev.flush());
        });
        await Promise.all(calls);
        disk.clearFaults();
        await dev.close();
        // Through a fresh connection: each block acknowledged holds one of the writes made to it
        // (two writes to a block may land in either order; the last acknowledged or a later one).
        const again = await openBlockDevice({ platform: host.guest, vdev: disk.vdev, timeoutMs: 3000 });
        for (const [block, g] of gen) {
          const back = await again.read(block * 16384, 16384);
          const candidates = Array.from({ length: 16 }, (_, i) => pattern(block * 16384, 16384, c * 100 + i));
          const match = candidates.some((c) => firstDifference(back, c) < 0);
          expect(match, `seed ${f.seed}: block ${block} lost acknowledged write ${g}`).toBe(true);
          acked++;
        }
        await again.close();
      } finally {
        await fx.close().catch(() => undefined);
      }
    }
    f.report(`backends, ${acked} acknowledged blocks checked`, 'ok', 'BLKIF_EPROTO');
  }, 60_000);

  it("hostile state sequences: calls settle, typed, while the backend's state jumps around and once it is restarted", async () => {
    const f = fuzz('blkfront states');
    const states = ['1', '2', '3', '4', '5', '6', '7', '0', '9', 'x', ''];
    for (const c of f.cases(12, 8000)) {
      const fx = await diskFixture({ size: 1 << 20 }, { timeoutMs: 1000, reconnectTimeoutMs: 800 });
      try {
        const { dev, disk, host } = fx;
        const xs = host.dom0.xenstore;
        const io = Array.from({ length: 24 }, (_, i) =>
          settle(f, `sequence ${c}, call ${i}`, () =>
            i % 2 === 0 ? dev.write(i * 4096, pattern(i * 4096, 4096, i)) : dev.read(i * 4096, 4096),
          ),
        );
        for (let k = 0, n = 1 + f.int(4); k < n; k++) {
          const s = f.pick(states);
          if (f.chance(0.1)) await xs.rm(`${disk.backendPath}/state`).catch(() => undefined);
          else await xs.write(`${disk.backendPath}/state`, s);
          await new Promise((r) => setTimeout(r, f.int(30)));
        }
        // A state key that says Connected is all a frontend has to go on: when the
        // sequence ends on InitWait then Connected written over a backend that never
        // saw the new ring, the driver waits for it as Linux's would. The toolstack
        // then restarts the backend for real (Closing), and from there every call
        // settles: served after a reconnect, or typed when the reconnect gives up.
        const t0 = Date.now();
        const all = Promise.all(io);
        const quiet = await Promise.race([all.then(() => false), new Promise<boolean>((r) => setTimeout(() => r(true), 1500))]);
        if (quiet) {
          f.tally.add('backend restarted by the toolstack');
          await disk.goClosing().catch(() => undefined);
        }
        await all;
        expect(Date.now() - t0).toBeLessThan(5000);
        await settle(f, 'close', () => dev.close());
        f.tally.add(`device ${dev.stats().reconnects > 0 ? 'reconnected' : 'not reconnected'}`);
      } finally {
        await fx.close().catch(() => undefined);
      }
    }
    f.report('sequences', 'ok');
  }, 60_000);

  it('write-verify across backend restarts that change the limits: no acknowledged write lost', async () => {
    const f = fuzz('blkfront restarts');
    const fx = await diskFixture(
      { size: 2 << 20, maxIndirectSegments: 512 },
      { queues: 4, ringPages: 8, maxIndirectSegments: 512, reconnectTimeoutMs: 5000 },
    );
    try {
      const { dev, disk } = fx;
      const blocks = 64;
      const bsz = 32768;
      const model = new Array<number>(blocks).fill(0);
      let stop = false;
      let gen = 0;
      let acked = 0;
      let mismatches = 0;
      const workers = Array.from({ length: 8 }, async (_, w) => {
        while (!stop) {
          const b = w + 8 * f.int(blocks / 8); // each worker owns its blocks: no two writes to one block at once
          const g = ++gen;
          await dev.write(b * bsz, pattern(b * bsz, bsz, g));
          model[b] = g;
          acked++;
          if (firstDifference(await dev.read(b * bsz, bsz), pattern(b * bsz, bsz, g)) >= 0) mismatches++;
        }
      });
      const limits: string[] = [];
      for (let r = 0; r < 8; r++) {
        await new Promise((res) => setTimeout(res, 100 + f.int(200)));
        const next = {
          maxRingPageOrder: f.int(5),
          maxQueues: 1 + f.int(4),
          maxIndirectSegments: f.pick([0, 32, 256, 512]),
          persistent: f.chance(0.5),
        };
        limits.push(JSON.stringify(next));
        disk.reconfigure(next);
        await disk.goClosing();
        await new Promise<void>((res) => dev.once('reconnect', () => res()));
      }
      stop = true;
      await Promise.all(workers);
      for (let b = 0; b < blocks; b++) {
        if (model[b] !== 0 && firstDifference(await dev.read(b * bsz, bsz), pattern(b * bsz, bsz, model[b]!)) >= 0) mismatches++;
      }
      console.log(
        `fuzz blkfront restarts: 8 restarts (${limits.join(' ')}); ${acked} acknowledged writes, ${mismatches} mismatches, ` +
          `${dev.stats().replayed} pieces replayed`,
      );
      expect(mismatches).toBe(0);
      expect(dev.stats()).toMatchObject({ reconnects: 8, errors: 0 });
    } finally {
      await fx.close();
    }
  }, 60_000);
});
