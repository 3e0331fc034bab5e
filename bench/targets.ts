/**
 * The driver's performance targets, measured with blkbench on an image in
 * tmpfs, each driver run beside a Node fs baseline in the same process, and
 * printed figure by figure beside the target:
 *
 *   npm run bench:targets [-- --runtime S --ios N --strict]
 *
 * Ratios, not absolute figures, are the targets: both sides share the
 * machine, the process and the moment. --strict exits 1 when one is missed.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseOptions, type BenchOptions } from '../src/cli/blkbench/options.js';
import { runBench } from '../src/cli/blkbench/bench.js';
import type { Report } from '../src/cli/blkbench/report.js';
import { bytes, int } from '../src/cli/common/format.js';
import { defaultTmpdir, layOut } from '../src/cli/blkbench/targets.js';
import { removeOnSignal } from '../src/cli/common/signals.js';

const { values } = parseArgs({
  options: {
    runtime: { type: 'string', default: '4' },
    ramp: { type: 'string', default: '1' },
    ios: { type: 'string', default: '1000000' },
    strict: { type: 'boolean', default: false },
  },
});

const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with node --expose-gc (npm run bench:targets does)');

const dir = mkdtempSync(join(defaultTmpdir(), 'blkbench-targets-'));
// Interrupted, the images would otherwise stay in /dev/shm's memory.
removeOnSignal(dir);
if (!dir.startsWith('/dev/shm/')) process.stdout.write(`note: no writable /dev/shm; the image is in ${dir}, which may not be tmpfs\n`);
const image = join(dir, 'disk.img');

async function options(args: string[]): Promise<BenchOptions> {
  const r = await parseOptions([...args, '--image', image, '--no-progress']);
  if (r.kind !== 'run') throw new Error('unexpected help');
  return r.options;
}

interface Row {
  figure: string;
  target: string;
  measured: string;
  met: boolean;
}
const rows: Row[] = [];
const row = (figure: string, target: string, measured: string, met: boolean): void => {
  rows.push({ figure, target, measured, met });
  process.stdout.write(`  ${met ? 'met   ' : 'MISSED'}  ${figure}: ${measured} (target ${target})\n`);
};

/** CPU per I/O of the driver's own thread (the backend's workers left out): a figure, not a target. */
const cpuRow = (r: Report): void => {
  const c = r.cpu_us_per_io;
  process.stdout.write(
    `  figure  CPU per I/O: driver thread ${c.thread === null ? 'n/a' : `${c.thread.toFixed(2)} µs`}, ` +
      `whole process ${c.process.toFixed(2)} µs (Node fs baseline: ${r.baseline!.cpu_us_per_io.process.toFixed(2)} µs)\n`,
  );
};

async function main(): Promise<void> {
  const runtime = values.runtime;
  const ramp = values.ramp;
  process.stdout.write(
    `blkbench targets on ${cpus().length} x ${cpus()[0]?.model.trim() ?? 'CPU'}, ${bytes(totalmem(), 0)} RAM, Node ${process.version}; image ${image}\n`,
  );
  const common = ['--runtime', runtime, '--ramp-time', ramp, '--baseline'];
  layOut(image, 1 << 30);

  /** The driver's IOPS against Node fs on the same image, against a floor. */
  const iopsRow = (r: Report, floor: number): void =>
    row(
      'IOPS, driver / Node fs',
      `>= ${floor}`,
      `${r.ratio!.iops.toFixed(2)} (${int(r.iops)} vs ${int(r.baseline!.iops)})`,
      r.ratio!.iops >= floor,
    );

  process.stdout.write('4 KiB random read, iodepth 32\n');
  const rr = await runBench(await options(['--rw', 'randread', '--bs', '4k', '--iodepth', '32', '--size', '256m', ...common]));
  iopsRow(rr, 0.6);
  const maps = rr.backend!.maps / rr.ring!.requests;
  row(
    'backend map operations per request after warm-up',
    '-> 0',
    `${maps.toFixed(5)} (${int(rr.backend!.maps)} over ${int(rr.ring!.requests)} requests)`,
    maps < 0.001,
  );
  row('grant pool fallbacks (fresh grants)', '0', int(rr.pool!.fallbacks), rr.pool!.fallbacks === 0);
  row('notifications per request', 'well under 1', rr.notifications_per_request!.toFixed(4), rr.notifications_per_request! < 0.25);
  cpuRow(rr);

  process.stdout.write('4 KiB random write, iodepth 32\n');
  const rw = await runBench(await options(['--rw', 'randwrite', '--bs', '4k', '--iodepth', '32', '--size', '256m', ...common]));
  iopsRow(rw, 0.5);
  const wmaps = rw.backend!.maps / rw.ring!.requests;
  row('backend map operations per request after warm-up', '-> 0', wmaps.toFixed(5), wmaps < 0.001);
  row('notifications per request', 'well under 1', rw.notifications_per_request!.toFixed(4), rw.notifications_per_request! < 0.25);
  cpuRow(rw);

  process.stdout.write('1 MiB sequential read (indirect descriptors), iodepth 8, into device buffers (zero copy)\n');
  const sr = await runBench(await options(['--rw', 'read', '--bs', '1m', '--iodepth', '8', '--size', '1g', '--zero-copy', ...common]));
  row(
    'bandwidth, driver / Node fs',
    '>= 0.8',
    `${sr.ratio!.bandwidth.toFixed(2)} (${bytes(sr.bandwidth_bytes_per_s)}/s vs ${bytes(sr.baseline!.bandwidth_bytes_per_s)}/s)`,
    sr.ratio!.bandwidth >= 0.8,
  );
  const srMaps = sr.backend!.maps / sr.ring!.requests;
  row('backend map operations per request after warm-up', '-> 0', srMaps.toFixed(5), srMaps < 0.001);
  cpuRow(sr);
  process.stdout.write('1 MiB sequential read, iodepth 8, ordinary memory (bounced through the pool; for comparison)\n');
  const sb = await runBench(await options(['--rw', 'read', '--bs', '1m', '--iodepth', '8', '--size', '1g', ...common]));
  process.stdout.write(
    `  info    bandwidth, driver / Node fs: ${sb.ratio!.bandwidth.toFixed(2)} (${bytes(sb.bandwidth_bytes_per_s)}/s vs ` +
      `${bytes(sb.baseline!.bandwidth_bytes_per_s)}/s); the bounce copy is what device buffers save\n`,
  );

  const n = Number(values.ios);
  process.stdout.write(`${int(n)} requests (4 KiB random read, iodepth 32), heap after warm-up and at the end\n`);
  let heapWarm = 0;
  let heapEnd = 0;
  let rssEnd = 0;
  const big = await runBench(
    await options(['--rw', 'randread', '--bs', '4k', '--iodepth', '32', '--size', '256m', '--number-ios', String(n), '--ramp-time', ramp]),
    {
      run: () => ({
        afterRamp: () => {
          gc!();
          heapWarm = process.memoryUsage().heapUsed;
        },
        afterRun: () => {
          gc!();
          const m = process.memoryUsage();
          heapEnd = m.heapUsed;
          rssEnd = m.rss;
        },
      }),
    },
  );
  const growth = heapEnd - heapWarm;
  row(
    'heap growth over the run',
    '~0 (under 1 MiB)',
    `${growth >= 0 ? '+' : ''}${bytes(Math.abs(growth))} (${bytes(heapWarm)} -> ${bytes(heapEnd)}), ` +
      `${int(big.ios)} requests at ${int(big.iops)} IOPS; RSS ${bytes(rssEnd)}`,
    growth < 1 << 20,
  );

  const missed = rows.filter((r) => !r.met);
  process.stdout.write(
    `targets: ${rows.length - missed.length} met, ${missed.length} missed${missed.length > 0 ? `: ${missed.map((r) => r.figure).join('; ')}` : ''}\n`,
  );
  if (values.strict && missed.length > 0) process.exitCode = 1;
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`bench:targets: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => rmSync(dir, { recursive: true, force: true }));
