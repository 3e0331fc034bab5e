/**
 * One blkbench run as a function: opens the target, runs the job on the
 * driver, then (with --baseline) the same job on the image through Node fs
 * in this process, and returns the report. The binary (cli.ts) and the
 * benchmark targets (bench/targets.ts) both call it.
 */
import type { BenchOptions } from './options.js';
import { runJob, type IoEngine, type JobResult, type RunHooks } from './run.js';
import { driverOptions, featureLine, openDriverTarget, openFsBaseline, prepareTarget, type DriverTarget } from './targets.js';
import { jobOptions, mergeJobs, startJobs } from './jobs.js';
import type { BlockDeviceInfo } from '../../index.js';
import { figures, jobOf, progressLine, type Report } from './report.js';
import { profiled } from './profile.js';

export interface BenchHooks {
  /** The driver is connected (tests reach the simulated backend through it). */
  opened?(t: DriverTarget): void | Promise<void>;
  /** Per-run hooks, told which engine runs. */
  run?(engine: IoEngine, t: DriverTarget): RunHooks;
}

/** `h`, plus a progress line on stderr (rewritten in place) when `show`. */
function withProgress(h: RunHooks, show: boolean, label: string): RunHooks {
  if (!show || h.progress !== undefined) return h;
  return { ...h, progress: (p) => process.stderr.write(`\r\x1b[K${progressLine(label, p)}`) };
}

export async function runBench(o: BenchOptions, hooks: BenchHooks = {}): Promise<Report> {
  if (o.numjobs > 1) return runJobsBench(o);
  const show = o.progress ?? (process.stderr.isTTY === true && !o.json);
  const t = await openDriverTarget(o);
  try {
    await hooks.opened?.(t);
    let driverHooks = withProgress(hooks.run?.(t.engine, t) ?? {}, show, 'driver');
    if (o.cpuProfile !== undefined) driverHooks = profiled(driverHooks, o.cpuProfile);
    const driver = await runJob(t.engine, o, driverHooks);
    if (show) process.stderr.write('\r\x1b[K');
    const report = reportOf(o, t.engine.size, t.describe, t.device.info, t.grantLimit, driver);
    if (o.baseline) {
      const fs = openFsBaseline(t.image!);
      try {
        const base = await runJob(fs, o, withProgress(hooks.run?.(fs, t) ?? {}, show, 'baseline'));
        if (show) process.stderr.write('\r\x1b[K');
        addBaseline(report, base);
      } finally {
        fs.close();
      }
    }
    return report;
  } finally {
    await t.close();
  }
}

/** --numjobs N: the jobs on their threads, then (with --baseline) N jobs at once on the image through Node fs. */
async function runJobsBench(o: BenchOptions): Promise<Report> {
  const p = prepareTarget(o);
  try {
    const jobs = await startJobs(o, p.spec, driverOptions(o));
    let driver: JobResult;
    const info = jobs.disk.device.info;
    try {
      driver = await jobs.run();
    } finally {
      await jobs.close();
    }
    const report = reportOf(o, info.size, `${p.describe} (${info.size} bytes), ${o.numjobs} job threads`, info, null, driver);
    if (o.baseline) {
      const engines = Array.from({ length: o.numjobs }, () => openFsBaseline(p.image!));
      try {
        addBaseline(report, mergeJobs(await Promise.all(engines.map((e, j) => runJob(e, jobOptions(o, j, o.numjobs, e.size))))));
      } finally {
        for (const e of engines) e.close();
      }
    }
    return report;
  } finally {
    p.cleanup();
  }
}

function reportOf(
  o: BenchOptions,
  diskSize: number,
  target: string,
  info: BlockDeviceInfo,
  grantLimit: number | null,
  driver: JobResult,
): Report {
  const mem = process.memoryUsage();
  return {
    job: jobOf(o, o.size ?? diskSize - o.offset),
    target,
    features: featureLine(info),
    grant_limit: grantLimit,
    negotiated: {
      queues: info.features.queues,
      ring_pages: info.features.ringPages,
      indirect_segments: info.features.indirectSegments,
      persistent_grants: info.features.persistentGrants,
    },
    ...figures(driver),
    memory: { rss_bytes: mem.rss, heap_used_bytes: mem.heapUsed },
  };
}

function addBaseline(report: Report, run: JobResult): void {
  const base = figures(run);
  report.baseline = base;
  report.ratio = {
    iops: base.iops === 0 ? 0 : Math.round((report.iops / base.iops) * 1000) / 1000,
    bandwidth: base.bandwidth_bytes_per_s === 0 ? 0 : Math.round((report.bandwidth_bytes_per_s / base.bandwidth_bytes_per_s) * 1000) / 1000,
  };
}
