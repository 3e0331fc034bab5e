/**
 * The two sides of the suite's comparisons and how they are run: blkbench
 * through the driver, kbench (scripts/xen/kbench.c: native AIO with O_DIRECT,
 * the same number of I/Os in flight) through the kernel's own xen-blkfront, on
 * twin vbds backed the same way. Both leave the same warm-up out and both
 * report the whole guest's busy CPU over the measured phase, so CPU per I/O
 * counts the kernel driver's interrupt work and our process alike. Both read
 * the clock: blkbench as its defaults do, kbench once per io_getevents.
 * Emulation makes absolute figures meaningless; the ratios are the figures.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { MiB, XVDB, blkbenchJson, report } from './env.js';
import { GNTALLOC_LIMIT } from '../../src/gnttab/gntshr.js';

const KBENCH = '/usr/bin/kbench';
/** One warm-up rule for both sides: this much left out, then this much measured. */
export const RAMP_S = 2;
export const RUNTIME_S = 3;

export interface Workload {
  name: string;
  rw: 'read' | 'write' | 'randread' | 'randwrite';
  bs: number;
  depth: number;
}

/** One side's run: rate, and the whole guest's busy CPU per I/O in µs. */
export interface Side {
  iops: number;
  bytesPerS: number;
  cpuUsPerIo: number;
  detail: string;
}

/** What blkbench's JSON says that the comparisons use. */
interface BenchOut {
  ios: number;
  iops: number;
  bandwidth_bytes_per_s: number;
  cpu_us_per_io: { process: number; thread: number | null; machine: number | null };
  lat_sampled_every: number;
  ring: { notifications: number; responses_per_interrupt: number; requests: number } | null;
  negotiated: { queues: number; ring_pages: number; indirect_segments: number; persistent_grants: boolean };
  job: { numjobs: number };
}

/**
 * blkbench on the driver's vbd with only the workload flags (a user's
 * defaults), plus `extra` for the labelled rows.
 */
export function blkbench(
  w: Workload,
  vdev = XVDB,
  extra: string[] = [],
  time = { ramp: RAMP_S, runtime: RUNTIME_S },
): Side & { out: BenchOut } {
  const args = ['--rw', w.rw, '--bs', String(w.bs), '--iodepth', String(w.depth), '--runtime', String(time.runtime)];
  if (time.ramp > 0) args.push('--ramp-time', String(time.ramp));
  const out = blkbenchJson<BenchOut>(vdev, [...args, ...extra], { timeoutMs: 120_000 });
  assert.ok(out.ios > 0, 'blkbench did some I/O');
  assert.ok(out.cpu_us_per_io.machine !== null, 'the guest has /proc/stat');
  const ring = out.ring;
  return {
    out,
    iops: out.iops,
    bytesPerS: out.bandwidth_bytes_per_s,
    cpuUsPerIo: out.cpu_us_per_io.machine,
    detail:
      ring === null
        ? ''
        : `driver thread${out.job.numjobs > 1 ? 's' : ''} ${out.cpu_us_per_io.thread?.toFixed(0)} µs/IO, ` +
          `${(ring.notifications / Math.max(1, ring.requests)).toFixed(3)} notifications/req, ${ring.responses_per_interrupt} responses/interrupt` +
          (out.lat_sampled_every === 0 ? ', no clock' : `, 1 in ${out.lat_sampled_every} timed`),
  };
}

/** kbench on the kernel driver's disk, with the same warm-up rule; `threads` threads each keep the workload's depth in flight. */
export function kbench(w: Workload, dev: string, size: number, runtime = RUNTIME_S, ramp = RAMP_S, threads = 1): Side {
  const r = spawnSync(KBENCH, [dev, w.rw, String(w.bs), String(w.depth), String(size), String(runtime), String(ramp), String(threads)], {
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

const int = (n: number) => Math.round(n).toLocaleString('en-US');

/** A workload's rate as people read it: MiB/s for 1 MiB, IOPS for small blocks. */
export function rate(w: Workload, iops: number): string {
  return w.bs >= MiB ? `${((iops * w.bs) / MiB).toFixed(1)} MiB/s` : `${int(iops)} IOPS`;
}

/** The median and the range of some runs. */
export interface Spread {
  median: number;
  min: number;
  max: number;
}

export function spread(xs: number[]): Spread {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  const median = s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]! };
}

/**
 * Runs every side `rounds` times, the order reversed on every other round
 * (A B, B A, A B: ABBA), so drift over the boot falls on all sides alike.
 */
export function alternate<T>(sides: Array<() => T>, rounds: number): T[][] {
  const out: T[][] = sides.map(() => []);
  for (let r = 0; r < rounds; r++) {
    const order = sides.map((_, i) => i);
    if (r % 2 === 1) order.reverse();
    for (const i of order) out[i]!.push(sides[i]!());
  }
  return out;
}

/** One side's runs as the line says them: median rate (range), median CPU per I/O. */
export function said(w: Workload, runs: Side[]): { iops: Spread; cpu: Spread; text: string } {
  const iops = spread(runs.map((r) => r.iops));
  const cpu = spread(runs.map((r) => r.cpuUsPerIo));
  const text =
    `${rate(w, iops.median)} (${rate(w, iops.min)}–${rate(w, iops.max)}), ${cpu.median.toFixed(0)} µs CPU/IO` +
    (runs.length > 0 && runs[0]!.detail !== '' ? ` [${runs[runs.length >> 1]!.detail}]` : '');
  return { iops, cpu, text };
}

/**
 * One comparison line: the driver's runs against the kernel's, medians
 * with ranges, and the ratios of the medians.
 */
export function compareLine(w: Workload, label: string, ours: Side[], kernel: Side[], kernelLabel: string, rule: string): void {
  const o = said(w, ours);
  const k = said(w, kernel);
  report(
    `${w.name} [${label}]: blkbench ${o.text}; ${kernelLabel} ${k.text}; ` +
      `ratio ${(o.iops.median / k.iops.median).toFixed(2)}, CPU/IO ratio ${(o.cpu.median / k.cpu.median).toFixed(2)} ` +
      `(medians of ${ours.length} and ${kernel.length}, ${rule})`,
  );
}

/** Grant pages the tuned rows let gntalloc hand out: 1 MiB at 32 in flight on two queues, with room to spare. */
export const GRANT_LIMIT = 16384;

/**
 * Sets gntalloc's limit (root only) for the duration of `body`. Its default,
 * 1024 pages for every user together, holds 4 MiB in flight; the kernel's
 * driver has no such cap.
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
