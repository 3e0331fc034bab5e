/**
 * One blkbench run as a function: opens the target, runs the job on the
 * driver, then (with --baseline) the same job on the image through Node fs
 * in this process, and returns the report. The binary (cli.ts) and the
 * benchmark targets (bench/targets.ts) both call it.
 */
import type { BenchOptions } from './options.js';
import { runJob, type IoEngine, type RunHooks } from './run.js';
import { featureLine, openDriverTarget, openFsBaseline, type DriverTarget } from './targets.js';
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
  const show = o.progress ?? (process.stderr.isTTY === true && !o.json);
  const t = await openDriverTarget(o);
  try {
    await hooks.opened?.(t);
    const size = o.size ?? t.engine.size - o.offset;
    let driverHooks = withProgress(hooks.run?.(t.engine, t) ?? {}, show, 'driver');
    if (o.cpuProfile !== undefined) driverHooks = profiled(driverHooks, o.cpuProfile);
    const driver = await runJob(t.engine, o, driverHooks);
    if (show) process.stderr.write('\r\x1b[K');
    const mem = process.memoryUsage();
    const report: Report = {
      job: jobOf(o, size),
      target: t.describe,
      features: featureLine(t.device.info),
      grant_limit: t.grantLimit,
      negotiated: {
        queues: t.device.info.features.queues,
        ring_pages: t.device.info.features.ringPages,
        indirect_segments: t.device.info.features.indirectSegments,
        persistent_grants: t.device.info.features.persistentGrants,
      },
      ...figures(driver),
      memory: { rss_bytes: mem.rss, heap_used_bytes: mem.heapUsed },
    };
    if (o.baseline) {
      const fs = openFsBaseline(t.image!);
      try {
        const base = figures(await runJob(fs, o, withProgress(hooks.run?.(fs, t) ?? {}, show, 'baseline')));
        if (show) process.stderr.write('\r\x1b[K');
        report.baseline = base;
        report.ratio = {
          iops: base.iops === 0 ? 0 : Math.round((report.iops / base.iops) * 1000) / 1000,
          bandwidth:
            base.bandwidth_bytes_per_s === 0 ? 0 : Math.round((report.bandwidth_bytes_per_s / base.bandwidth_bytes_per_s) * 1000) / 1000,
        };
      } finally {
        fs.close();
      }
    }
    return report;
  } finally {
    await t.close();
  }
}
