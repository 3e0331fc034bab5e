/**
 * blkbench's output: one figures object per run (the JSON shape), the
 * readable summary made from it, and the progress line.
 */
import { bytes, int } from '../common/format.js';
import type { BenchOptions } from './options.js';
import type { JobResult } from './run.js';
import type { Mismatch } from './workload.js';
import { PERCENTILES, runChart } from './plot.js';

/** The figures of one run; the JSON output is this, plus `baseline` and `ratio`. */
export interface Figures {
  ios: number;
  reads: number;
  writes: number;
  bytes: number;
  runtime_s: number;
  iops: number;
  bandwidth_bytes_per_s: number;
  lat_ns: { mean: number; p50: number; p99: number; p999: number; min: number; max: number };
  /** One I/O in this many was timed (0: --no-latency); the latency figures are over those. */
  lat_sampled_every: number;
  /** What one clock read cost at start (ns): what chose the sampling. */
  clock_read_ns: number;
  /** Latency (ns) at each of plot.ts's PERCENTILES (zeros when not measured). */
  lat_percentiles_ns: number[];
  /** I/Os completed in each whole second from the first (warm-up included): the run's shape. */
  per_second_ios: number[];
  /** CPU time of the whole process (the simulated backend's threads included) over the measured phase. */
  cpu: { user_s: number; system_s: number; percent: number; by_thread: Record<string, number> | null };
  /**
   * CPU per I/O in microseconds: this process's, the driver's own thread's
   * (null without /proc/thread-self), and the whole machine's
   * busy time (interrupts and every other process included; null without
   * /proc/stat), the figure comparable with a kernel driver's.
   */
  cpu_us_per_io: { process: number; thread: number | null; machine: number | null };
  pool: { hits: number; fallbacks: number; waits: number } | null;
  backend: { maps: number; unmaps: number } | null;
  /** polls, poll_misses: busy polls (--poll-us) that found responses, and that gave up and waited for the event. */
  ring: { requests: number; notifications: number; responses_per_interrupt: number; polls: number; poll_misses: number } | null;
  notifications_per_request: number | null;
  /** Reconnects (with replay) during the measured run; null for an engine without a ring. */
  reconnects: number | null;
  verify_mismatches: number | null;
  verify_checked: number;
  first_mismatch: Mismatch | null;
}

export interface Report extends Figures {
  job: {
    rw: string;
    rwmixread: number;
    bs: number;
    iodepth: number;
    queues: number;
    numjobs: number;
    offset: number;
    size: number;
    runtime_s: number | null;
    number_ios: number | null;
    ramp_time_s: number;
    seed: number;
    persistent: boolean;
    indirect: boolean;
    pool: boolean;
    ring_pages: number;
    zero_copy: boolean;
    poll_us: number;
  };
  target: string;
  features: string;
  /** gntalloc's limit on a real guest (null on the simulated host). */
  grant_limit: number | null;
  /** What the driver and the backend agreed on (what a fair kernel comparison must be given too). */
  negotiated: { queues: number; ring_pages: number; indirect_segments: number; persistent_grants: boolean };
  memory: { rss_bytes: number; heap_used_bytes: number };
  baseline?: Figures;
  ratio?: { iops: number; bandwidth: number };
}

const round = (x: number, digits = 0): number => {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
};

export function figures(r: JobResult): Figures {
  const c = r.counters;
  return {
    ios: r.ios,
    reads: r.reads,
    writes: r.writes,
    bytes: r.bytes,
    runtime_s: round(r.seconds, 3),
    iops: round(r.ios / r.seconds),
    bandwidth_bytes_per_s: round(r.bytes / r.seconds),
    lat_ns: {
      mean: round(r.lat.mean),
      p50: r.lat.quantile(0.5),
      p99: r.lat.quantile(0.99),
      p999: r.lat.quantile(0.999),
      min: r.lat.count === 0 ? 0 : r.lat.min,
      max: r.lat.max,
    },
    lat_sampled_every: r.latEvery,
    clock_read_ns: round(r.clockNs),
    lat_percentiles_ns: PERCENTILES.map((p) => r.lat.quantile(p / 100)),
    per_second_ios: r.perSecond,
    cpu: {
      user_s: round(r.cpu.user, 3),
      system_s: round(r.cpu.system, 3),
      percent: round((100 * (r.cpu.user + r.cpu.system)) / r.seconds, 1),
      by_thread: r.threads,
    },
    cpu_us_per_io: {
      process: r.ios === 0 ? 0 : round((1e6 * (r.cpu.user + r.cpu.system)) / r.ios, 2),
      thread: r.threadCpu === null || r.ios === 0 ? null : round((1e6 * r.threadCpu) / r.ios, 2),
      machine: r.machineBusy === null || r.ios === 0 ? null : round((1e6 * r.machineBusy) / r.ios, 2),
    },
    pool: c === null ? null : { hits: c.poolHits, fallbacks: c.poolFallbacks, waits: c.poolWaits },
    backend: c === null || c.backendMaps === null ? null : { maps: c.backendMaps, unmaps: c.backendUnmaps ?? 0 },
    ring:
      c === null
        ? null
        : {
            requests: c.requests,
            notifications: c.notifications,
            responses_per_interrupt: c.interrupts === 0 ? 0 : round(c.responses / c.interrupts, 2),
            polls: c.polls,
            poll_misses: c.pollMisses,
          },
    notifications_per_request: c === null ? null : c.requests === 0 ? 0 : round(c.notifications / c.requests, 4),
    reconnects: c === null ? null : c.reconnects,
    verify_mismatches: r.verifyMismatches,
    verify_checked: r.verifyChecked,
    first_mismatch: r.firstMismatch,
  };
}

export function jobOf(o: BenchOptions, size: number): Report['job'] {
  return {
    rw: o.rw,
    rwmixread: o.rwmixread,
    bs: o.bs,
    iodepth: o.iodepth,
    queues: o.queues,
    numjobs: o.numjobs,
    offset: o.offset,
    size,
    runtime_s: o.runtime ?? null,
    number_ios: o.numberIos ?? null,
    ramp_time_s: o.rampTime,
    seed: o.seed,
    persistent: o.persistent,
    indirect: o.indirect,
    pool: o.pool,
    ring_pages: o.ringPages,
    zero_copy: o.zeroCopy,
    poll_us: o.pollUs,
  };
}

/** Nanoseconds as µs or ms. */
export function duration(ns: number): string {
  if (ns < 1e3) return `${Math.round(ns)} ns`;
  if (ns < 1e6) return `${(ns / 1e3).toFixed(ns < 1e4 ? 1 : 0)} µs`;
  if (ns < 1e9) return `${(ns / 1e6).toFixed(2)} ms`;
  return `${(ns / 1e9).toFixed(2)} s`;
}

/** A whole number with thousands separators. */

function block(f: Figures): string[] {
  const lines = [
    `  ios        ${int(f.ios)} in ${f.runtime_s.toFixed(2)} s (${int(f.reads)} reads, ${int(f.writes)} writes)`,
    `  iops       ${int(f.iops)}`,
    `  bandwidth  ${bytes(f.bandwidth_bytes_per_s)}/s`,
    f.lat_sampled_every === 0
      ? '  latency    not measured (--no-latency)'
      : `  latency    mean ${duration(f.lat_ns.mean)}, p50 ${duration(f.lat_ns.p50)}, p99 ${duration(f.lat_ns.p99)}, ` +
        `p99.9 ${duration(f.lat_ns.p999)}, max ${duration(f.lat_ns.max)}` +
        (f.lat_sampled_every > 1 ? ` (1 I/O in ${f.lat_sampled_every} timed: a clock read costs ${duration(f.clock_read_ns)} here)` : ''),
    `  cpu        ${f.cpu.percent}% of one core (user ${f.cpu.user_s.toFixed(2)} s, system ${f.cpu.system_s.toFixed(2)} s); ` +
      `${f.cpu_us_per_io.process.toFixed(1)} µs per I/O` +
      (f.cpu_us_per_io.thread === null ? '' : `, driver thread ${f.cpu_us_per_io.thread.toFixed(1)}`) +
      (f.cpu_us_per_io.machine === null ? '' : `, machine ${f.cpu_us_per_io.machine.toFixed(1)} µs per I/O`),
  ];
  if (f.pool !== null)
    lines.push(
      `  grants     pool hits ${int(f.pool.hits)}, fresh grants ${int(f.pool.fallbacks)}, waits for pages ${int(f.pool.waits)}` +
        (f.backend === null
          ? ''
          : `; backend maps ${int(f.backend.maps)}, unmaps ${int(f.backend.unmaps)}` +
            ` (${f.ring!.requests === 0 ? 0 : (f.backend.maps / f.ring!.requests).toFixed(4)} maps per request)`),
    );
  if (f.ring !== null)
    lines.push(
      `  ring       ${int(f.ring.requests)} requests, ${f.notifications_per_request!.toFixed(4)} notifications per request, ` +
        `${f.ring.responses_per_interrupt} responses per interrupt` +
        (f.reconnects ? `; ${f.reconnects} reconnect(s) with replay` : ''),
    );
  if (f.verify_mismatches !== null) {
    lines.push(`  verify     ${int(f.verify_mismatches)} mismatched blocks (${int(f.verify_checked)} checked)`);
    const m = f.first_mismatch;
    if (m !== null) {
      lines.push(
        `             first: block at ${m.offset}, generation ${m.expectedGeneration} expected; sector ${m.sectorOffset} holds ` +
          (m.found.seedOk ? `generation ${m.found.generation} of offset ${m.found.offset}` : 'no pattern of this run'),
      );
    }
  }
  return lines;
}

export function summary(r: Report): string {
  const j = r.job;
  const what =
    `${j.rw}${j.rw === 'randrw' ? ` (${j.rwmixread}% reads)` : ''}, bs ${bytes(j.bs)}, iodepth ${j.iodepth}, ` +
    `region ${bytes(j.size)} at ${j.offset}`;
  const lines = [`blkbench: ${what}`, `target:   ${r.target}`, `driver:   ${r.features}`, ...block(r)];
  if (r.baseline !== undefined && r.ratio !== undefined) {
    lines.push('baseline: Node fs (libuv thread pool) on the same image, same pattern, same process', ...block(r.baseline));
    lines.push(`ratio     driver / baseline: iops ${r.ratio.iops.toFixed(2)}x, bandwidth ${r.ratio.bandwidth.toFixed(2)}x`);
  }
  if (r.grant_limit !== null && r.pool !== null && r.pool.waits > 0) {
    lines.push(
      `note:     requests waited ${int(r.pool.waits)} times for grant pages: gntalloc's limit of ${int(r.grant_limit)} pages ` +
        'held back the I/O in flight; as root, raise it (echo 16384 > /sys/module/xen_gntalloc/parameters/limit; docs/guest.md)',
    );
  }
  lines.push(`memory    rss ${bytes(r.memory.rss_bytes)}, heap used ${bytes(r.memory.heap_used_bytes)}`);
  return lines.join('\n') + '\n';
}

/** The progress line (no newline; the caller rewrites it in place). */
export function progressLine(
  label: string,
  p: { elapsed: number; ios: number; bytes: number; total: number | undefined; runtime: number | undefined },
): string {
  const rate = p.elapsed > 0 ? p.ios / p.elapsed : 0;
  const done =
    p.runtime !== undefined
      ? `${p.elapsed.toFixed(0)}/${p.runtime} s`
      : p.total !== undefined
        ? `${((100 * p.ios) / p.total).toFixed(0)}%`
        : `${p.elapsed.toFixed(0)} s`;
  return `[${label} ${done}] ${int(rate)} IOPS, ${bytes(p.bytes / Math.max(p.elapsed, 1e-9))}/s, ${int(p.ios)} ios`;
}

/** The run as an SVG chart (`--plot`): MiB/s for blocks of 64 KiB and up, IOPS below. */
export function chart(r: Report): string {
  const j = r.job;
  const mib = j.bs >= 65536;
  const rate = (n: number) => (mib ? (n * j.bs) / (1024 * 1024) : n);
  const run = (label: string, f: Figures) => ({
    label,
    perSecond: f.per_second_ios.map(rate),
    latencyUs: f.lat_sampled_every === 0 ? null : f.lat_percentiles_ns.map((ns) => ns / 1000),
  });
  const runs = [run(`driver: ${r.features}`, r)];
  if (r.baseline !== undefined) runs.push(run('baseline: Node fs on the same image', r.baseline));
  const title = `blkbench ${j.rw}, ${bytes(j.bs)}, ${j.iodepth} in flight: ${r.target}`;
  return runChart(title.length > 120 ? `${title.slice(0, 117)}...` : title, mib ? 'MiB/s' : 'IOPS', runs);
}
