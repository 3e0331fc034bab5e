/**
 * blkbench through the driver against the same workload through the kernel's
 * own xen-blkfront, in the same boot, on twin vbds backed the same way (tmpfs
 * through a loop device in dom0, Linux's xen-blkback; both filled with the same
 * bytes). The kernel's driver is loaded with what ours negotiated (ring pages,
 * segments per request); one run at its module defaults comes first, for
 * reference. The headline rows are the driver as a user gets it: blkbench with
 * only the workload flags. Rows with other choices follow, labelled. Every
 * row is the median of three runs per side, alternated ABBA, under one
 * warm-up rule for both sides (compare.ts).
 */
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { MiB, XVDB, XVDD, XVDH, kernelDriverSettings, kernelDriverWith, report } from './env.js';
import { GNTALLOC_LIMIT } from '../../src/gnttab/gntshr.js';
import {
  GRANT_LIMIT,
  RAMP_S,
  RUNTIME_S,
  alternate,
  blkbench,
  compareLine,
  kbench,
  said,
  withGrantLimit,
  type Side,
  type Workload,
} from './compare.js';

/** The suite's table: 4 KiB random at 1 and 32 in flight; 1 MiB sequential at 8 and 32. */
export const ALL_WORKLOADS: Workload[] = [
  { name: '4 KiB random read, 1 in flight', rw: 'randread', bs: 4096, depth: 1 },
  { name: '4 KiB random read, 32 in flight', rw: 'randread', bs: 4096, depth: 32 },
  { name: '4 KiB random write, 32 in flight', rw: 'randwrite', bs: 4096, depth: 32 },
  { name: '1 MiB sequential read, 8 in flight', rw: 'read', bs: MiB, depth: 8 },
  { name: '1 MiB sequential read, 32 in flight', rw: 'read', bs: MiB, depth: 32 },
  { name: '1 MiB sequential write, 8 in flight', rw: 'write', bs: MiB, depth: 8 },
  { name: '1 MiB sequential write, 32 in flight', rw: 'write', bs: MiB, depth: 32 },
];

/**
 * The rows that also run `--numjobs 2` against kbench with 2 threads (each job or thread keeping
 * the row's depth in flight); the row's own defaults and matched-kernel runs are the one-job sides.
 */
const withJobs = (w: Workload): boolean =>
  (w.rw === 'randread' && w.bs === 4096 && w.depth === 32) || (w.rw === 'read' && w.bs === MiB && w.depth === 8);

/**
 * XEN_SUITE_ARGS="suite=bench bench=1,4" runs only those rows of the table
 * (counted from 1), "bench=jobs" only the rows with the --numjobs sides, for iterating.
 */
const only = (process.env.XEN_BENCH_ONLY ?? '').split(',').filter(Boolean);
export const WORKLOADS =
  only.length === 0
    ? ALL_WORKLOADS
    : ALL_WORKLOADS.filter((w, i) => only.includes(String(i + 1)) || (only.includes('jobs') && withJobs(w)));

/** A budget above the backend's time for one 4 KiB read in this testbed (about 1 ms under emulation). */
const POLL_US = 2000;

/** The labelled rows beyond the defaults: which choice, for which workloads. */
interface Extra {
  label: string;
  args: string[];
  grantLimit?: number;
  for: (w: Workload) => boolean;
}

const EXTRAS: Extra[] = [
  {
    label: 'device buffers (--zero-copy)',
    args: ['--zero-copy'],
    grantLimit: GRANT_LIMIT,
    for: (w) => w.depth === 32 && w.rw.endsWith('read'),
  },
  { label: `defaults, gntalloc limit raised to ${GRANT_LIMIT}`, args: [], grantLimit: GRANT_LIMIT, for: (w) => w.bs >= MiB },
  // Two jobs split the booted limit's pages between their pools: with it raised, what two jobs do at 1 MiB unhampered.
  {
    label: `--numjobs 2, gntalloc limit raised to ${GRANT_LIMIT}`,
    args: ['--numjobs', '2'],
    grantLimit: GRANT_LIMIT,
    for: (w) => withJobs(w) && w.bs >= MiB,
  },
  // Off by default: it trades the poll's CPU for the event-channel wake-up, which only pays when few I/Os are in flight.
  { label: `busy poll up to ${POLL_US} µs (--poll-us ${POLL_US})`, args: ['--poll-us', String(POLL_US)], for: (w) => w.depth === 1 },
];

const ROUNDS = 3;
const RULE = `${RAMP_S} s warm-up left out on both sides, ${RUNTIME_S} s measured`;

const limited =
  <T>(pages: number | undefined, f: () => T) =>
  () =>
    pages === undefined ? f() : withGrantLimit(pages, f);

test("bench: blkbench at its defaults against the kernel's xen-blkfront matched to it, same boot", { timeout: 1_200_000 }, () => {
  // What the driver negotiates at its defaults, which the kernel's driver is then given.
  const probe = blkbench(ALL_WORKLOADS[0]!, XVDB, [], { ramp: 0, runtime: 1 }).out.negotiated;
  const matched = { max_ring_page_order: Math.log2(probe.ring_pages), max_indirect_segments: Math.max(32, probe.indirect_segments) };
  const booted = readFileSync(GNTALLOC_LIMIT, 'utf8').trim();

  // The kernel at its module defaults, on its own twin (xvdh): one run per workload, for reference.
  const ref = kernelDriverWith(XVDH, 'xvdh', { max_ring_page_order: 0, max_indirect_segments: 32 });
  const bytes = Number(readFileSync('/sys/block/xvdh/size', 'utf8').trim()) * 512;
  report(`kernel at its defaults: ${kernelDriverSettings('xvdh')}`);
  const atDefaults = new Map<Workload, Side>(WORKLOADS.map((w) => [w, kbench(w, ref, bytes)]));

  const dev = kernelDriverWith(XVDD, 'xvdd', matched);
  report(
    `the driver negotiated ${probe.queues} queues x ${probe.ring_pages}-page rings, ${probe.indirect_segments} segments per request, ` +
      `persistent grants ${probe.persistent_grants ? 'on' : 'off'}; gntalloc limit ${booted} as booted; the matched kernel: ${kernelDriverSettings('xvdd')}`,
  );
  for (const w of WORKLOADS) {
    const extras = EXTRAS.filter((e) => e.for(w));
    const jobs = withJobs(w);
    const sides = [
      () => blkbench(w, XVDB),
      () => kbench(w, dev, bytes),
      ...extras.map((e) => limited(e.grantLimit, () => blkbench(w, XVDB, e.args))),
      // Two jobs, each with its own queue and thread and the row's depth; the kernel with two kbench threads likewise.
      ...(jobs ? [() => blkbench(w, XVDB, ['--numjobs', '2']), () => kbench(w, dev, bytes, RUNTIME_S, RAMP_S, 2)] : []),
    ];
    const [ours, kernel, ...rest] = alternate<Side>(sides, ROUNDS);
    compareLine(w, 'defaults', ours!, kernel!, 'matched kernel', RULE);
    extras.forEach((e, i) => compareLine(w, e.label, rest[i]!, kernel!, 'matched kernel', RULE));
    if (jobs) {
      const [two, k2] = rest.slice(extras.length);
      compareLine(w, '--numjobs 2', two!, k2!, 'matched kernel, 2 kbench threads', RULE);
      const scale = (a: Side[], b: Side[]) => {
        const x = said(w, a);
        const y = said(w, b);
        return `${(y.iops.median / x.iops.median).toFixed(2)}x the rate, ${(y.cpu.median / x.cpu.median).toFixed(2)}x the CPU/IO`;
      };
      const raised = (label: string) => rest[extras.findIndex((e) => e.label.startsWith(label))];
      const r1 = raised('defaults, gntalloc limit raised');
      const r2 = raised('--numjobs 2, gntalloc limit raised');
      report(
        `${w.name} [1 -> 2 jobs on one vbd, each at this depth]: blkbench ${scale(ours!, two!)}` +
          (r1 !== undefined && r2 !== undefined ? ` (with gntalloc's limit raised ${scale(r1, r2)})` : '') +
          `; kernel 1 -> 2 kbench threads ${scale(kernel!, k2!)}`,
      );
    }
    const k0 = atDefaults.get(w)!;
    const o = said(w, ours!);
    report(
      `${w.name} [kernel at its module defaults, one run]: ${said(w, [k0]).text}; the driver's defaults / it ${(o.iops.median / k0.iops).toFixed(2)}`,
    );
  }
});
