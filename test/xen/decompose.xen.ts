/**
 * Where the defaults lose against the tuned settings, one choice at a time,
 * in one boot (run it alone: XEN_SUITE_ARGS="suite=decompose"). Each workload
 * climbs the same ladder from what a user gets (blkbench with only the
 * workload flags, gntalloc's limit as the guest booted) to the suite's tuned
 * row, each step adding one choice to the one before, with the whole guest's
 * CPU per I/O. The matched kernel runs in the same rounds for scale. The
 * rounds alternate direction (ABBA) so drift over the boot falls on both ends.
 */
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { MiB, XVDB, XVDD, blkbenchJson, kernelDriverSettings, kernelDriverWith, report } from './env.js';
import { GNTALLOC_LIMIT } from '../../src/gnttab/gntshr.js';
import { clockCostNs } from '../../src/cli/blkbench/run.js';
import { kbench, withGrantLimit, type Workload } from './compare.js';

const RUNTIME_S = 3;

interface Step {
  label: string;
  args: string[];
  /** gntalloc's limit for the step (undefined: as booted). */
  grantLimit?: number;
  /** Only for these block sizes. */
  only?: (w: Workload) => boolean;
}

const small = (w: Workload) => w.bs < MiB;

/** The ladder: each step is the one before plus one choice. */
const STEPS: Step[] = [
  { label: 'every I/O timed (the old default)', args: ['--lat-every', '1'] },
  { label: 'defaults', args: [] },
  { label: '+ gntalloc limit 16384', args: [], grantLimit: 16384 },
  { label: '+ --queues 1', args: ['--queues', '1'], grantLimit: 16384, only: small },
  { label: '+ --no-latency', args: ['--no-latency'], grantLimit: 16384 },
  { label: '+ --zero-copy', args: ['--zero-copy'], grantLimit: 16384 },
  { label: '+ 6 s warm-up instead of 2', args: ['--ramp-time', '6'], grantLimit: 16384 },
];

/** Warm-up left out of every step but the last (the suite's rule for both sides). */
const RAMP = ['--ramp-time', '2'];

const WORKLOADS: Workload[] = [
  { name: '4 KiB random read, 32 in flight', rw: 'randread', bs: 4096, depth: 32 },
  { name: '4 KiB random read, 1 in flight', rw: 'randread', bs: 4096, depth: 1 },
  { name: '1 MiB sequential read, 32 in flight', rw: 'read', bs: MiB, depth: 32 },
  { name: '1 MiB sequential write, 8 in flight', rw: 'write', bs: MiB, depth: 8 },
];

interface Out {
  iops: number;
  bandwidth_bytes_per_s: number;
  cpu_us_per_io: { process: number; thread: number | null; machine: number | null };
  lat_sampled_every: number;
  clock_read_ns: number;
  per_second_ios: number[];
  pool: { hits: number; fallbacks: number } | null;
  ring: { requests: number; notifications: number; responses_per_interrupt: number } | null;
  negotiated: { queues: number; ring_pages: number; indirect_segments: number };
}

function run(w: Workload, s: Step, runtime = RUNTIME_S): Out {
  const go = () =>
    blkbenchJson<Out>(
      XVDB,
      [
        '--rw',
        w.rw,
        '--bs',
        String(w.bs),
        '--iodepth',
        String(w.depth),
        '--runtime',
        String(runtime),
        ...(s.args.includes('--ramp-time') || runtime !== RUNTIME_S ? [] : RAMP),
        ...s.args,
      ],
      {
        timeoutMs: 120_000,
      },
    );
  return s.grantLimit === undefined ? go() : withGrantLimit(s.grantLimit, go);
}

const rate = (w: Workload, x: { iops: number; bandwidth_bytes_per_s: number }) =>
  w.bs >= MiB ? `${(x.bandwidth_bytes_per_s / MiB).toFixed(1)} MiB/s` : `${Math.round(x.iops)} IOPS`;

test('decompose: from the defaults to the tuned settings, one choice at a time', { timeout: 1_500_000 }, () => {
  const source = readFileSync('/sys/devices/system/clocksource/clocksource0/current_clocksource', 'utf8').trim();
  report(
    `decompose: clock source ${source}, one performance.now() costs ${clockCostNs().toFixed(0)} ns; gntalloc limit as booted ${readFileSync(GNTALLOC_LIMIT, 'utf8').trim()}`,
  );
  const first = run(WORKLOADS[0]!, STEPS[1]!, 1);
  const n = first.negotiated;
  const dev = kernelDriverWith(XVDD, 'xvdd', {
    max_ring_page_order: Math.log2(n.ring_pages),
    max_indirect_segments: Math.max(32, n.indirect_segments),
  });
  const sectors = Number(readFileSync('/sys/block/xvdd/size', 'utf8').trim());
  report(
    `decompose: the driver negotiated ${n.queues} queues x ${n.ring_pages} pages, ${n.indirect_segments} segments; the kernel's: ${kernelDriverSettings('xvdd')}`,
  );

  // Warm-up: what the first seconds give at the defaults, and with V8 told to optimise sooner.
  const FLAGS = [[], ['--maglev'], ['--interrupt-budget=16896'], ['--always-sparkplug']];
  for (const w of WORKLOADS.slice(0, 2)) {
    for (const node of FLAGS) {
      const o = blkbenchJson<Out>(XVDB, ['--rw', w.rw, '--bs', String(w.bs), '--iodepth', String(w.depth), '--runtime', '10'], {
        node,
        timeoutMs: 120_000,
      });
      report(
        `decompose warm-up ${w.name}, defaults${node.length === 0 ? '' : `, node ${node.join(' ')}`}: I/Os per second from the first: ${o.per_second_ios.join(' ')}; ` +
          `machine ${o.cpu_us_per_io.machine?.toFixed(0)} µs CPU/IO over the 10 s`,
      );
    }
  }

  for (const w of WORKLOADS) {
    const steps = STEPS.filter((s) => s.only === undefined || s.only(w));
    const results = new Map<string, Out[]>();
    const kernel: number[] = [];
    const kcpu: number[] = [];
    for (let round = 0; round < 2; round++) {
      const order = round % 2 === 0 ? steps : [...steps].reverse();
      if (round % 2 === 1) {
        const k = withGrantLimit(16384, () => kbench(w, dev, sectors * 512, RUNTIME_S, 2));
        kernel.push(k.iops);
        kcpu.push(k.cpuUsPerIo);
      }
      for (const s of order) {
        const o = run(w, s);
        results.set(s.label, [...(results.get(s.label) ?? []), o]);
      }
      if (round % 2 === 0) {
        const k = withGrantLimit(16384, () => kbench(w, dev, sectors * 512, RUNTIME_S, 2));
        kernel.push(k.iops);
        kcpu.push(k.cpuUsPerIo);
      }
    }
    const kIops = Math.max(...kernel);
    report(
      `decompose ${w.name}: matched kernel ${kernel.map((x) => (w.bs >= MiB ? `${((x * w.bs) / MiB).toFixed(1)} MiB/s` : `${Math.round(x)} IOPS`)).join(', ')}; ${kcpu.map((c) => c.toFixed(0)).join(', ')} µs CPU/IO`,
    );
    for (const s of steps) {
      const rs = results.get(s.label)!;
      const best = rs.reduce((a, b) => (a.iops >= b.iops ? a : b));
      report(
        `decompose ${w.name} | ${s.label}: ${rs.map((r) => rate(w, r)).join(', ')} (best / kernel ${(best.iops / kIops).toFixed(2)}); ` +
          `machine ${rs.map((r) => r.cpu_us_per_io.machine?.toFixed(0)).join(', ')} µs CPU/IO, main thread ${rs.map((r) => r.cpu_us_per_io.thread?.toFixed(0)).join(', ')}; ` +
          `timed 1 in ${best.lat_sampled_every} (clock ${best.clock_read_ns} ns); fresh grants ${best.pool?.fallbacks}; ` +
          `${best.ring === null ? '' : `${(best.ring.notifications / Math.max(1, best.ring.requests)).toFixed(3)} notifications/req, ${best.ring.responses_per_interrupt} responses/interrupt; `}` +
          `per second ${best.per_second_ios.join(' ')}`,
      );
    }
  }
});
