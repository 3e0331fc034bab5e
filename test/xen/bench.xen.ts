/**
 * blkbench through the driver against the same workload through the
 * kernel's own xen-blkfront, in the same boot, on two vbds of the same size
 * backed the same way (tmpfs through a loop device in dom0, Linux's
 * xen-blkback). The kernel side is kbench (scripts/xen/kbench.c): native AIO
 * with O_DIRECT, keeping the same number of I/Os in flight. Both leave a
 * warm-up out (RAMP_S), and both report the whole guest's busy CPU over the
 * measured phase, so CPU per I/O counts the kernel driver's interrupt work
 * and our process alike. Neither reads the clock per I/O (blkbench
 * --no-latency): that is the benchmark's bookkeeping, and on a PV guest a
 * clock read is a system call. Emulation makes absolute figures meaningless; the
 * ratios are the figures.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { MiB, XVDB, XVDD, blkbenchJson, kernelDriverFor, report } from './env.js';
import { GNTALLOC_LIMIT } from '../../src/gnttab/gntshr.js';

const KBENCH = '/usr/bin/kbench';
const RUNTIME_S = 2;
/**
 * Warm-up left out. The driver's is longer: under emulation V8's optimising
 * compiler takes seconds to settle (at 1 in flight a 12 s warm-up gave 586
 * IOPS against 355 after 2 s, test/xen/profile.xen.ts), where on hardware it
 * takes milliseconds; the kernel's driver needs none.
 */
const RAMP_S = 6;
const KERNEL_RAMP_S = 1;

export interface Workload {
  name: string;
  rw: 'read' | 'write' | 'randread' | 'randwrite';
  bs: number;
  depth: number;
}

/** The suite's table: 4 KiB random at 1, 8 and 32 in flight; 1 MiB sequential at 8 and 32. */
export const WORKLOADS: Workload[] = [
  { name: '4 KiB random read, 1 in flight', rw: 'randread', bs: 4096, depth: 1 },
  { name: '4 KiB random read, 8 in flight', rw: 'randread', bs: 4096, depth: 8 },
  { name: '4 KiB random read, 32 in flight', rw: 'randread', bs: 4096, depth: 32 },
  { name: '4 KiB random write, 32 in flight', rw: 'randwrite', bs: 4096, depth: 32 },
  { name: '1 MiB sequential read, 8 in flight', rw: 'read', bs: MiB, depth: 8 },
  { name: '1 MiB sequential read, 32 in flight', rw: 'read', bs: MiB, depth: 32 },
  { name: '1 MiB sequential write, 8 in flight', rw: 'write', bs: MiB, depth: 8 },
  { name: '1 MiB sequential write, 32 in flight', rw: 'write', bs: MiB, depth: 32 },
];

/** One side's run: rate, and the whole guest's busy CPU per I/O in µs. */
export interface Side {
  iops: number;
  bytesPerS: number;
  cpuUsPerIo: number;
  detail: string;
}

/** blkbench on the driver's vbd. `extra`: more blkbench options (e.g. --zero-copy, --cpu-profile). */
export function blkbench(w: Workload, vdev = XVDB, extra: string[] = []): Side {
  const out = blkbenchJson<{
    ios: number;
    iops: number;
    bandwidth_bytes_per_s: number;
    cpu_us_per_io: { process: number; thread: number | null; machine: number | null };
    ring: { notifications: number; responses_per_interrupt: number; requests: number } | null;
  }>(
    vdev,
    [
      '--rw',
      w.rw,
      '--bs',
      String(w.bs),
      '--iodepth',
      String(w.depth),
      '--runtime',
      String(RUNTIME_S),
      '--ramp-time',
      String(RAMP_S),
      '--no-latency',
      ...extra,
    ],
    { timeoutMs: 120_000 },
  );
  assert.ok(out.ios > 0, 'blkbench did some I/O');
  assert.ok(out.cpu_us_per_io.machine !== null, 'the guest has /proc/stat');
  const ring = out.ring;
  return {
    iops: out.iops,
    bytesPerS: out.bandwidth_bytes_per_s,
    cpuUsPerIo: out.cpu_us_per_io.machine,
    detail:
      ring === null
        ? ''
        : `process ${out.cpu_us_per_io.process.toFixed(0)} µs/IO, main thread ${out.cpu_us_per_io.thread?.toFixed(0)}, ` +
          `${(ring.notifications / Math.max(1, ring.requests)).toFixed(3)} notifications/req, ${ring.responses_per_interrupt} responses/interrupt`,
  };
}

/** kbench on the kernel driver's disk. */
export function kbench(w: Workload, dev: string, size: number): Side {
  const r = spawnSync(KBENCH, [dev, w.rw, String(w.bs), String(w.depth), String(size), String(RUNTIME_S), String(KERNEL_RAMP_S)], {
    encoding: 'utf8',
    timeout: 120_000,
  });
  assert.equal(r.status, 0, `kbench failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as {
    ios: number;
    iops: number;
    bandwidth_bytes_per_s: number;
    machine_busy_s: number;
    process_cpu_s: number;
  };
  assert.ok(out.ios > 0, 'kbench did some I/O');
  return {
    iops: out.iops,
    bytesPerS: out.bandwidth_bytes_per_s,
    cpuUsPerIo: (1e6 * out.machine_busy_s) / out.ios,
    detail: `process ${((1e6 * out.process_cpu_s) / out.ios).toFixed(1)} µs/IO`,
  };
}

export { kernelDriverFor } from './env.js';

const int = (n: number) => Math.round(n).toLocaleString('en-US');
const rate = (w: Workload, s: Side) => (w.bs >= MiB ? `${(s.bytesPerS / MiB).toFixed(1)} MiB/s` : `${int(s.iops)} IOPS`);

/**
 * Runs both sides `rounds` times, alternating, keeps each side's better run,
 * and reports the line.
 */
export function compare(w: Workload, ours: () => Side, theirs: () => Side, label = '', how = '', rounds = 2): void {
  const best = (a: Side, b: Side) => (a.iops >= b.iops ? a : b);
  let o = ours();
  let k = theirs();
  for (let i = 1; i < rounds; i++) {
    o = best(o, ours());
    k = best(k, theirs());
  }
  report(
    `${w.name}${label}: blkbench ${rate(w, o)}, ${o.cpuUsPerIo.toFixed(0)} µs CPU/IO (${how === '' ? '' : `${how}, `}${o.detail}); ` +
      `kernel ${rate(w, k)}, ${k.cpuUsPerIo.toFixed(0)} µs CPU/IO; ratio ${(o.iops / k.iops).toFixed(2)}, CPU/IO ratio ${(o.cpuUsPerIo / k.cpuUsPerIo).toFixed(2)}`,
  );
}

/** Grant pages the benchmark lets gntalloc hand out: 1 MiB at 32 in flight on two queues, with room to spare. */
const GRANT_LIMIT = 16384;

/**
 * Raises gntalloc's limit (root only) for the duration of `body`. Its
 * default, 1024 pages for every user together, holds 4 MiB in flight: the
 * kernel's driver has no such cap, so on equal terms ours must not have it either.
 */
export function withGrantLimit<T>(pages: number, body: () => T): T {
  const saved = readFileSync(GNTALLOC_LIMIT, 'utf8').trim();
  writeFileSync(GNTALLOC_LIMIT, String(pages));
  try {
    return body();
  } finally {
    writeFileSync(GNTALLOC_LIMIT, saved);
  }
}

test("bench: blkbench against the kernel's xen-blkfront, same workloads, same boot", { timeout: 900_000 }, () =>
  withGrantLimit(GRANT_LIMIT, () => {
    const dev = kernelDriverFor(XVDD, 'xvdd');
    const sectors = Number(readFileSync('/sys/block/xvdd/size', 'utf8').trim());
    console.log(
      `# kernel xen-blkfront bound to vbd-${XVDD}: ${sectors} sectors; ${RAMP_S} s ramp (kernel ${KERNEL_RAMP_S} s), ${RUNTIME_S} s measured, best of two each`,
    );
    // Device buffers: granted once and used in place, they won every workload measured (test/xen/profile.xen.ts).
    // One queue for 4 KiB: the driver runs on one thread, and one ring takes twice the responses per
    // wake-up; two for 1 MiB, where blkback's second thread in dom0 is what pays.
    for (const w of WORKLOADS) {
      const queues = w.bs < MiB ? '1' : '2';
      compare(
        w,
        () => blkbench(w, XVDB, ['--zero-copy', '--queues', queues]),
        () => kbench(w, dev, sectors * 512),
        '',
        `${queues} queue${queues === '1' ? '' : 's'}`,
      );
    }
  }),
);
