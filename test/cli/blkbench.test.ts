/**
 * blkbench: option parsing (every rule, one-line errors, exit statuses),
 * the JSON shape with and without the baseline, --verify catching
 * corruptions injected behind the driver's back, and the pieces it is
 * built from (histogram, workload, pattern).
 */
import { describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseOptions, parseSize, UsageError, type BenchOptions } from '../../src/cli/blkbench/options.js';
import { main } from '../../src/cli/blkbench/main.js';
import { runBench } from '../../src/cli/blkbench/bench.js';
import { Histogram } from '../../src/cli/blkbench/histogram.js';
import { clockCostNs, latencySampling } from '../../src/cli/blkbench/run.js';
import { Workload, checkPattern, fillPattern } from '../../src/cli/blkbench/workload.js';
import { summary, type Report } from '../../src/cli/blkbench/report.js';
import { grantRoom } from '../../src/cli/blkbench/targets.js';
import { mergeJobs } from '../../src/cli/blkbench/jobs.js';
import { SWITCHES, VALUE_OPTIONS } from '../helpers/blkbench.js';
import { describe as describeProfile, summarize, type CpuProfile } from '../../bench/cpuprofile.js';
import { runMain } from '../helpers/cli.js';

const CLI = fileURLToPath(new URL('../../dist/src/cli/blkbench/cli.js', import.meta.url));

async function opts(args: string[]): Promise<BenchOptions> {
  const r = await parseOptions(args);
  if (r.kind !== 'run') throw new Error('expected options, got help text');
  return r.options;
}

async function usageError(args: string[]): Promise<string> {
  const err = await parseOptions(args).then(
    () => null,
    (e: unknown) => e,
  );
  expect(err, args.join(' ')).toBeInstanceOf(UsageError);
  const msg = (err as UsageError).message;
  expect(msg).not.toContain('\n');
  return msg;
}

/** Runs main() in this process, capturing what it writes. */
const run = (args: string[]): Promise<{ code: number; out: string; err: string }> => runMain(main, args);

describe('blkbench options', () => {
  it('has fio-like defaults: 4 KiB random reads, 32 in flight, 5 s, everything on, a temporary image', async () => {
    const o = await opts([]);
    expect(o).toMatchObject({
      rw: 'randread',
      bs: 4096,
      iodepth: 32,
      queues: 2,
      runtime: 5,
      numberIos: undefined,
      offset: 0,
      seed: 1,
      persistent: true,
      indirect: true,
      pool: true,
      zeroCopy: false,
      ringPages: 4,
      verify: false,
      baseline: false,
      json: false,
      latency: true,
      latEvery: undefined,
      wakeup: 'event-loop',
      cpuProfile: undefined,
    });
    expect(o.target).toEqual({ kind: 'temp', size: 64 << 20, dir: undefined });
  });

  it('parses sizes with binary units', async () => {
    for (const [text, bytes] of [
      ['4096', 4096],
      ['4k', 4096],
      ['4K', 4096],
      ['64KiB', 65536],
      ['64kb', 65536],
      ['1m', 1 << 20],
      ['1.5k', 1536],
      ['2g', 2 ** 31],
      ['1t', 2 ** 40],
    ] as const) {
      expect(parseSize('--bs', text), text).toBe(bytes);
    }
    for (const bad of ['', 'k', '4x', '-4k', '4 kk', '1e3', '0.1']) expect(() => parseSize('--bs', bad), bad).toThrow(UsageError);
  });

  it('reads every option', async () => {
    const o = await opts([
      '--rw',
      'randrw',
      '--rwmixread',
      '70',
      '--bs',
      '64k',
      '--iodepth',
      '8',
      '--queues',
      '4',
      '--size',
      '16m',
      '--offset',
      '1m',
      '--seed',
      '42',
      '--ramp-time',
      '0.5',
      '--number-ios',
      '1000',
      '--no-persistent',
      '--no-indirect',
      '--no-pool',
      '--zero-copy',
      '--ring-pages',
      '8',
      '--verify',
      '--json',
      '--no-progress',
      '--ramdisk',
      '32m',
      '--no-latency',
      '--wakeup',
      'thread',
      '--cpu-profile',
      '/tmp/p.cpuprofile',
    ]);
    expect(o).toMatchObject({
      rw: 'randrw',
      rwmixread: 70,
      bs: 65536,
      iodepth: 8,
      queues: 4,
      size: 16 << 20,
      offset: 1 << 20,
      seed: 42,
      rampTime: 0.5,
      numberIos: 1000,
      runtime: undefined,
      persistent: false,
      indirect: false,
      pool: false,
      zeroCopy: true,
      ringPages: 8,
      verify: true,
      json: true,
      progress: false,
      target: { kind: 'ramdisk', size: 32 << 20 },
      latency: false,
      wakeup: 'thread',
      cpuProfile: '/tmp/p.cpuprofile',
    });
    // --size alone means one pass; the temporary image covers offset + size.
    const p = await opts(['--size', '8m', '--offset', '4k']);
    expect(p.runtime).toBeUndefined();
    expect(p.target).toEqual({ kind: 'temp', size: (8 << 20) + 4096, dir: undefined });
    expect((await opts(['--image', '/tmp/x.img'])).target).toEqual({ kind: 'image', path: '/tmp/x.img', size: undefined });
    expect((await opts(['--xen', '--vdev', '51728'])).target).toEqual({ kind: 'xen', vdev: '51728' });
    expect((await opts(['--tmpdir', '/var/tmp'])).target).toMatchObject({ kind: 'temp', dir: '/var/tmp' });
  });

  it('refuses bad options with one clear line', async () => {
    expect(await usageError(['--bs', '1000'])).toMatch(/--bs: 1000 is not a positive multiple of 512/);
    expect(await usageError(['--bs', 'big'])).toMatch(/--bs: "big" is not a size/);
    expect(await usageError(['--rw', 'sideways'])).toMatch(/Argument: rw, Given: "sideways", Choices: "read"/);
    expect(await usageError(['--iodepth', '0'])).toMatch(/--iodepth: expected a whole number from 1/);
    expect(await usageError(['--iodepth', '2.5'])).toMatch(/--iodepth/);
    expect(await usageError(['--rwmixread', '101'])).toMatch(/--rwmixread/);
    expect(await usageError(['--ring-pages', '3'])).toMatch(/not a power of two/);
    expect(await usageError(['--runtime', '-1'])).toMatch(/--runtime: expected a positive number/);
    expect(await usageError(['--offset', '100'])).toMatch(/--offset: 100 is not a multiple of 512/);
    expect(await usageError(['--size', '1k', '--bs', '4k'])).toMatch(/smaller than one block/);
    expect(await usageError(['--image', 'a.img', '--ramdisk', '1m'])).toMatch(/--image and --ramdisk name different targets/);
    expect(await usageError(['--xen'])).toMatch(/--xen needs --vdev/);
    expect(await usageError(['--vdev', '51712'])).toMatch(/--vdev only goes with --xen/);
    expect(await usageError(['--xen', '--vdev', 'xvda'])).toMatch(/not a device number/);
    expect(await usageError(['--ramdisk', '1m', '--baseline'])).toMatch(/--baseline runs on an image file/);
    expect(await usageError(['--ramdisk', '1000'])).toMatch(/multiple of 4096/);
    expect(await usageError(['--image', 'a.img', '--tmpdir', '/tmp'])).toMatch(/--tmpdir only applies/);
    expect(await usageError(['--frobnicate'])).toMatch(/Unknown argument: frobnicate/);
    expect(await usageError(['extra'])).toMatch(/Unknown argument: extra/);
  });

  it('an option given last without its value is refused, not ignored', async () => {
    for (const o of VALUE_OPTIONS) {
      expect(await usageError(['--ramdisk', '4m', o].slice(o === '--ramdisk' ? 2 : 0))).toMatch(
        new RegExp(`Not enough arguments following: ${o.slice(2)}`),
      );
    }
  });

  it('an image that cannot fit is refused before anything is written, and nothing is left behind', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blkbench-room-'));
    try {
      const r = await run(['--offset', '1t', '--size', '4k', '--tmpdir', dir]);
      expect(r.code).toBe(1);
      expect(r.err.trim()).toMatch(/^blkbench: --offset and --size: a \d+-byte image does not fit in /);
      const img = join(dir, 'new.img');
      const r2 = await run(['--image', img, '--size', '1t']);
      expect(r2.code).toBe(1);
      expect(r2.err.trim()).toMatch(/does not fit/);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('--help explains every option, with examples', async () => {
    const r = await parseOptions(['--help']);
    expect(r.kind).toBe('text');
    const text = (r as { text: string }).text;
    for (const o of [...VALUE_OPTIONS, ...SWITCHES]) {
      expect(text, o).toContain(o);
    }
    expect(text).toContain('Examples:');
    expect(text).toContain('blkbench --rw randwrite --bs 4k --iodepth 32');
  });

  it('the binary: exit 2 and one line for bad options, 0 and the help text for --help, no stack traces', () => {
    const bad = spawnSync(process.execPath, [CLI, '--iodepth', 'lots'], { encoding: 'utf8' });
    expect(bad.status).toBe(2);
    expect(bad.stdout).toBe('');
    expect(bad.stderr.split('\n')[0]).toMatch(/^blkbench: /);
    expect(bad.stderr).not.toMatch(/\n\s+at /);
    const help = spawnSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    expect(help.status).toBe(0);
    expect(help.stdout).toContain('--iodepth');
    // A target that cannot open (no Xen here): one line, exit 1.
    const xen = spawnSync(process.execPath, [CLI, '--xen', '--vdev', '51712'], { encoding: 'utf8' });
    if (xen.status !== 0) {
      expect(xen.status).toBe(1);
      expect(xen.stderr.trim().split('\n')).toHaveLength(1);
      expect(xen.stderr).toMatch(/^blkbench: XEN_/);
    }
  });
});

const FIGURE_KEYS = [
  'ios',
  'reads',
  'writes',
  'bytes',
  'runtime_s',
  'iops',
  'bandwidth_bytes_per_s',
  'lat_ns',
  'cpu',
  'cpu_us_per_io',
  'pool',
  'backend',
  'ring',
  'notifications_per_request',
  'verify_mismatches',
  'verify_checked',
  'first_mismatch',
  'lat_sampled_every',
  'clock_read_ns',
  'lat_percentiles_ns',
  'per_second_ios',
];

function expectFigures(f: Record<string, unknown>, driver: boolean): void {
  expect(Object.keys(f)).toEqual(expect.arrayContaining(FIGURE_KEYS));
  const r = f as unknown as Report;
  expect(r.ios).toBeGreaterThan(0);
  expect(r.reads + r.writes).toBe(r.ios);
  expect(r.iops).toBeGreaterThan(0);
  const bs = r.bytes / r.ios;
  expect(Math.abs(r.bandwidth_bytes_per_s - r.iops * bs) / r.bandwidth_bytes_per_s).toBeLessThan(1e-3);
  expect(Object.keys(r.lat_ns).sort()).toEqual(['max', 'mean', 'min', 'p50', 'p99', 'p999']);
  expect(r.lat_ns.p50).toBeGreaterThan(0);
  expect(r.lat_ns.p50).toBeLessThanOrEqual(r.lat_ns.p99);
  expect(r.lat_ns.p99).toBeLessThanOrEqual(r.lat_ns.p999);
  expect(r.lat_ns.p999).toBeLessThanOrEqual(r.lat_ns.max);
  expect(r.lat_ns.min).toBeLessThanOrEqual(r.lat_ns.mean);
  // CPU per I/O: the process's, the main thread's (a part of it) and the machine's (on Linux).
  expect(r.cpu_us_per_io.process).toBeGreaterThan(0);
  expect(r.cpu_us_per_io.thread).toBeGreaterThan(0);
  expect(r.cpu_us_per_io.thread!).toBeLessThanOrEqual(r.cpu_us_per_io.process * 1.05 + 20);
  expect(r.cpu_us_per_io.machine).toBeGreaterThan(0);
  if (driver) {
    expect(Object.keys(r.pool!).sort()).toEqual(['fallbacks', 'hits', 'waits']);
    expect(Object.keys(r.backend!).sort()).toEqual(['maps', 'unmaps']);
    expect(r.ring!.requests).toBeGreaterThanOrEqual(r.ios);
    expect(r.notifications_per_request).toBeGreaterThan(0);
    expect(r.notifications_per_request).toBeLessThanOrEqual(1);
  } else {
    expect(r.pool).toBeNull();
    expect(r.backend).toBeNull();
    expect(r.notifications_per_request).toBeNull();
  }
}

describe('blkbench runs', () => {
  it('--json prints one object with the documented fields', async () => {
    const r = await run(['--ramdisk', '8m', '--rw', 'randrw', '--number-ios', '3000', '--iodepth', '16', '--json', '--verify']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out.trim().split('\n')).toHaveLength(1);
    const j = JSON.parse(r.out) as Report;
    expectFigures(j as unknown as Record<string, unknown>, true);
    expect(j.ios).toBe(3000);
    expect(j.reads).toBeGreaterThan(1000);
    expect(j.writes).toBeGreaterThan(1000);
    expect(j.verify_mismatches).toBe(0);
    expect(j.verify_checked).toBeGreaterThan(2048); // the read-back alone checks every block
    expect(j.job).toMatchObject({ rw: 'randrw', bs: 4096, iodepth: 16, size: 8 << 20 });
    expect(j.baseline).toBeUndefined();
    expect(j.ratio).toBeUndefined();
    expect(j.memory.rss_bytes).toBeGreaterThan(j.memory.heap_used_bytes);
  });

  it('--baseline adds the same figures for Node fs and the driver/baseline ratios', async () => {
    const r = await run(['--size', '4m', '--rw', 'randread', '--number-ios', '4000', '--baseline', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.out) as Report;
    expectFigures(j as unknown as Record<string, unknown>, true);
    expectFigures(j.baseline as unknown as Record<string, unknown>, false);
    expect(j.baseline!.ios).toBe(4000);
    expect(j.ratio!.iops).toBeCloseTo(j.iops / j.baseline!.iops, 2);
    expect(j.ratio!.bandwidth).toBeCloseTo(j.bandwidth_bytes_per_s / j.baseline!.bandwidth_bytes_per_s, 2);
    expect(j.verify_mismatches).toBeNull();
  });

  it('--no-latency reads no clock per I/O and says the latency was not measured; --cpu-profile profiles the measured phase', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blkbench-prof-'));
    try {
      const file = join(dir, 'run.cpuprofile');
      const j = JSON.parse(
        (await run(['--ramdisk', '4m', '--runtime', '0.5', '--ramp-time', '0.2', '--no-latency', '--cpu-profile', file, '--json'])).out,
      ) as Report;
      expect(j.ios).toBeGreaterThan(100);
      expect(j.lat_ns).toEqual({ mean: 0, p50: 0, p99: 0, p999: 0, min: 0, max: 0 });
      const summary = summarize(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile);
      // About the measured half-second alone, and the driver's own code is in it.
      expect(summary.totalUs / 1e6).toBeGreaterThan(0.3);
      expect(summary.totalUs / 1e6).toBeLessThan(2);
      expect(summary.parts.map(([part]) => part)).toContain('src/blkfront');
      expect(describeProfile(summary, 5).filter((l) => l.startsWith('self '))).toHaveLength(5);
      const text = await run(['--ramdisk', '4m', '--runtime', '0.2', '--no-latency']);
      expect(text.out).toContain('latency    not measured (--no-latency)');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('times one I/O in N where the clock is dear: --lat-every, and the choice made from the measured cost', async () => {
    expect(latencySampling(30)).toBe(1);
    expect(latencySampling(150)).toBe(1);
    expect(latencySampling(151)).toBe(2);
    expect(latencySampling(1000)).toBe(8);
    expect(latencySampling(50_000)).toBe(64); // a Xen PV guest under emulation: a system call per read
    expect(clockCostNs()).toBeGreaterThan(0);
    const j = JSON.parse((await run(['--ramdisk', '4m', '--runtime', '0.5', '--lat-every', '16', '--json'])).out) as Report;
    expect(j.lat_sampled_every).toBe(16);
    expect(j.lat_ns.p50).toBeGreaterThan(0);
    expect(j.per_second_ios.length).toBeLessThanOrEqual(1);
    const text = await run(['--ramdisk', '4m', '--runtime', '0.2', '--lat-every', '4']);
    expect(text.out).toMatch(/1 I\/O in 4 timed: a clock read costs .* here/);
    const d = JSON.parse((await run(['--ramdisk', '4m', '--runtime', '0.2', '--json'])).out) as Report;
    expect(d.lat_sampled_every).toBe(latencySampling(d.clock_read_ns));
    expect(d.negotiated).toMatchObject({ queues: 2, ring_pages: 4, indirect_segments: 256, persistent_grants: true });
    await expect(parseOptions(['--lat-every', '0'])).rejects.toThrow(UsageError);
  });

  it('says when the grant limit held a run back, and what to do', async () => {
    const j = JSON.parse((await run(['--ramdisk', '4m', '--runtime', '0.2', '--json'])).out) as Report;
    expect(j.grant_limit).toBeNull();
    expect(j.pool!.waits).toBe(0);
    expect(summary(j)).not.toContain('note:');
    const held = summary({ ...j, grant_limit: 1024, pool: { ...j.pool!, waits: 37 } });
    expect(held).toContain("requests waited 37 times for grant pages: gntalloc's limit of 1,024 pages");
    expect(held).toContain('/sys/module/xen_gntalloc/parameters/limit');
  });

  it('counts I/Os per second from the first, warm-up included', async () => {
    const j = JSON.parse((await run(['--ramdisk', '4m', '--runtime', '1.6', '--ramp-time', '1', '--json'])).out) as Report;
    expect(j.per_second_ios.length).toBe(2);
    expect(j.per_second_ios.every((n) => n > 0)).toBe(true);
    // The measured phase started 1 s in: its I/Os are within the per-second counts.
    expect(j.per_second_ios[1]!).toBeGreaterThan(0);
  });

  it('the summary names every figure', async () => {
    const r = await run(['--ramdisk', '4m', '--rw', 'write', '--bs', '64k', '--verify']);
    expect(r.code).toBe(0);
    for (const w of [
      'iops',
      'bandwidth',
      'latency',
      'p99.9',
      'cpu',
      'pool hits',
      'fresh grants',
      'backend maps',
      'notifications per request',
      '0 mismatched blocks',
    ]) {
      expect(r.out, w).toContain(w);
    }
  });

  it('--verify counts blocks corrupted on the disk behind the driver, and says what they hold', async () => {
    const o = await opts(['--ramdisk', '4m', '--rw', 'randwrite', '--number-ios', '2000', '--verify', '--json']);
    const bs = 4096;
    const report = await runBench(o, {
      run: (_engine, t) => ({
        afterRun: () => {
          const mem = t.sim!.disk.memory!;
          mem[10 * bs + 100] = mem[10 * bs + 100]! ^ 0xff; // a flipped byte
          mem.fill(0, 20 * bs + 1024, 20 * bs + 1536); // a zeroed sector
          mem.copyWithin(30 * bs, 40 * bs, 41 * bs); // a misdirected write: block 40's data in block 30
        },
      }),
    });
    expect(report.verify_mismatches).toBe(3);
    const m = report.first_mismatch!;
    expect([10 * bs, 20 * bs, 30 * bs]).toContain(m.offset);
    const again = await runBench(o, {
      run: (_engine, t) => ({ afterRun: () => void t.sim!.disk.memory!.copyWithin(30 * bs, 40 * bs, 41 * bs) }),
    });
    expect(again.verify_mismatches).toBe(1);
    expect(again.first_mismatch).toMatchObject({ offset: 30 * bs, sectorOffset: 30 * bs, found: { offset: 40 * bs, seedOk: true } });
  });

  it('--verify exits 1 when it finds a mismatch (a backend corrupting every read)', async () => {
    const o = await opts(['--ramdisk', '2m', '--rw', 'read', '--verify']);
    let n = 0;
    const report = await runBench(o, {
      run: (engine) => {
        const read = engine.read.bind(engine);
        // Reads that come back with a byte changed: the inline checks and the read-back both see it.
        engine.read = async (offset, buf) => {
          await read(offset, buf);
          if (n++ % 7 === 0) buf[511] = buf[511]! ^ 1;
        };
        return {};
      },
    });
    expect(report.verify_mismatches).toBeGreaterThan(0);
    expect(report.first_mismatch!.sectorOffset).toBe(report.first_mismatch!.offset);
  });
});

describe('blkbench interrupted', () => {
  it.each(['SIGINT', 'SIGTERM'] as const)('%s removes the temporary image and ends by that signal', async (signal) => {
    const parent = mkdtempSync(join(tmpdir(), 'blkbench-signal-'));
    try {
      const child = spawn(process.execPath, [CLI, '--tmpdir', parent, '--size', '16m', '--runtime', '60', '--no-progress'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.on('exit', (code, sig) => resolve({ code, signal: sig })),
      );
      // Running: the image is laid out and the device open (its file is there, the run under way).
      const deadline = Date.now() + 20_000;
      const image = (): string | undefined =>
        readdirSync(parent)
          .map((d) => join(parent, d, 'disk.img'))
          .find((f) => existsSync(f));
      while (Date.now() < deadline && image() === undefined) await new Promise((r) => setTimeout(r, 50));
      expect(image(), stderr).toBeDefined();
      await new Promise((r) => setTimeout(r, 1500));
      child.kill(signal);
      const end = await exited;
      expect(end.signal, stderr).toBe(signal);
      expect(readdirSync(parent)).toEqual([]);
    } finally {
      rmSync(parent, { recursive: true, force: true });
    }
  });
});

describe('blkbench --numjobs', () => {
  it('one queue per job; --queues must agree, and --cpu-profile is refused', async () => {
    const o = await opts(['--numjobs', '3']);
    expect([o.numjobs, o.queues]).toEqual([3, 3]);
    expect((await opts([])).numjobs).toBe(1);
    expect((await opts(['--numjobs', '2', '--queues', '2'])).queues).toBe(2);
    expect(await usageError(['--numjobs', '2', '--queues', '3'])).toMatch(/--queues must be 2 or left out/);
    expect(await usageError(['--numjobs', '2', '--cpu-profile', 'x.cpuprofile'])).toMatch(/--cpu-profile/);
    expect(await usageError(['--numjobs', '0'])).toMatch(/numjobs/);
  });

  it('runs each job on its own thread and queue, checked by --verify, against as many jobs on Node fs', async () => {
    const o = await opts([
      '--numjobs',
      '2',
      '--iodepth',
      '8',
      '--rw',
      'randrw',
      '--size',
      '8m',
      '--number-ios',
      '3000',
      '--verify',
      '--baseline',
    ]);
    const r = await runBench(o);
    expect(r.job.numjobs).toBe(2);
    expect(r.negotiated.queues).toBe(2);
    expect(r.target).toContain('2 job threads');
    // Each job's own I/Os, summed; each checked its own half of the region.
    expect(r.ios).toBe(6000);
    expect(r.reads + r.writes).toBe(6000);
    expect(r.verify_mismatches).toBe(0);
    expect(r.verify_checked).toBeGreaterThan(0);
    expect(r.ring!.requests).toBeGreaterThanOrEqual(6000);
    expect(r.lat_ns.p50).toBeGreaterThan(0);
    expect(r.baseline!.ios).toBe(6000);
    expect(r.baseline!.verify_mismatches).toBe(0);
  });

  it('merges the jobs: counts summed, latencies pooled, the longest time, per-second rates added', () => {
    const job = (ios: number, lat: number[], perSecond: number[], seconds: number) => {
      const h = new Histogram();
      for (const v of lat) h.record(v);
      const counters = {
        requests: ios,
        notifications: 1,
        interrupts: 2,
        responses: ios,
        polls: 0,
        pollMisses: 0,
        poolHits: ios,
        poolFallbacks: 0,
        poolWaits: 0,
        backendMaps: null,
        backendUnmaps: null,
        reconnects: 0,
      };
      return {
        ios,
        reads: ios,
        writes: 0,
        bytes: ios * 4096,
        seconds,
        lat: h,
        cpu: { user: seconds, system: 0 },
        machineBusy: seconds,
        threadCpu: 0.5,
        threads: null,
        counters,
        verifyMismatches: null,
        verifyChecked: 0,
        firstMismatch: null,
        latEvery: 1,
        clockNs: 30,
        perSecond,
      };
    };
    const m = mergeJobs([job(100, [1000, 2000], [50, 50], 2), job(300, [3000, 4000, 5000, 6000], [100, 150, 50], 2.5)]);
    expect([m.ios, m.bytes, m.seconds, m.threadCpu, m.machineBusy]).toEqual([400, 400 * 4096, 2.5, 1, 2.5]);
    expect([m.lat.count, m.lat.min, m.lat.max]).toEqual([6, 1000, 6000]);
    expect(m.perSecond).toEqual([150, 200, 50]);
    expect(m.counters).toMatchObject({ requests: 400, interrupts: 4, backendMaps: null });
    const h = Histogram.from(m.lat.snapshot());
    expect([h.count, h.quantile(0.5)]).toEqual([6, m.lat.quantile(0.5)]);
  });
});

describe('blkbench parts', () => {
  it('the histogram keeps every quantile within its 3% bucket', () => {
    const h = new Histogram();
    const values: number[] = [];
    let x = 12345;
    for (let i = 0; i < 20000; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      const v = 1000 + (x % 5_000_000);
      values.push(v);
      h.record(v);
    }
    values.sort((a, b) => a - b);
    for (const q of [0.5, 0.9, 0.99, 0.999]) {
      const exact = values[Math.ceil(q * values.length) - 1]!;
      expect(Math.abs(h.quantile(q) - exact) / exact, String(q)).toBeLessThan(0.035);
    }
    expect(h.mean).toBeCloseTo(values.reduce((a, b) => a + b, 0) / values.length, 6);
    expect(h.min).toBe(values[0]);
    expect(h.max).toBe(values.at(-1));
    for (const v of [0, 1, 63, 64, 65, 127, 128, 4095, 4096, 1e6, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 7]) {
      const [lo, hi] = Histogram.range(Histogram.bucket(v));
      expect(v, String(v)).toBeGreaterThanOrEqual(lo);
      expect(v, String(v)).toBeLessThanOrEqual(hi);
    }
  });

  it('the workload: same seed, same sequence; sequential wraps; the mix follows rwmixread', () => {
    const a = new Workload('randrw', 70, 4096, 1 << 20, 9);
    const b = new Workload('randrw', 70, 4096, 1 << 20, 9);
    let writes = 0;
    for (let i = 0; i < 10000; i++) {
      const x = a.next();
      expect(b.next()).toBe(x);
      expect(b.write).toBe(a.write);
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThan(256);
      if (a.write) writes++;
    }
    expect(writes / 10000).toBeGreaterThan(0.27);
    expect(writes / 10000).toBeLessThan(0.33);
    const s = new Workload('write', 50, 65536, 3 * 65536, 1);
    expect([s.next(), s.next(), s.next(), s.next()]).toEqual([0, 1, 2, 0]);
    expect(s.write).toBe(true);
    const c = new Workload('randread', 50, 4096, 1 << 20, 10);
    expect(Array.from({ length: 5 }, () => c.next())).not.toEqual(Array.from({ length: 5 }, () => a.next()));
  });

  it('the pattern tells a stale block, a misdirected one and garbage apart', () => {
    const buf = new Uint8Array(8192);
    const scratch = new Uint8Array(8192);
    fillPattern(buf, 1 << 20, 5, 7);
    expect(checkPattern(buf, 1 << 20, 5, 7, scratch)).toBeNull();
    expect(checkPattern(buf, 1 << 20, 6, 7, scratch)).toMatchObject({ found: { generation: 5, offset: 1 << 20, seedOk: true } });
    expect(checkPattern(buf, (1 << 20) + 8192, 5, 7, scratch)).toMatchObject({ found: { offset: 1 << 20 } });
    buf[4096 + 600] = buf[4096 + 600]! ^ 4;
    expect(checkPattern(buf, 1 << 20, 5, 7, scratch)).toMatchObject({ sectorOffset: (1 << 20) + 4096 + 512, found: { seedOk: true } });
    buf.fill(0);
    expect(checkPattern(buf, 1 << 20, 5, 7, scratch)).toMatchObject({ sectorOffset: 1 << 20, found: { seedOk: false } });
  });
});

describe('blkbench on a real Xen: the grant limit', () => {
  const platform = (limit: number | undefined, shared: number) =>
    ({ grants: { limit: () => limit, stats: () => ({ sharedPages: shared }) } }) as unknown as Parameters<typeof grantRoom>[0];
  const device = (pool: number) => ({ stats: () => ({ pool: { size: pool } }) }) as unknown as Parameters<typeof grantRoom>[1];

  it('says which limit it found and what the pools took', () => {
    expect(grantRoom(platform(1024, 508), device(508), { zeroCopy: false, iodepth: 32, bs: 1 << 20 })).toBe(
      "grants: gntalloc limit 1024, 508 pages in the device's pools",
    );
    expect(grantRoom(platform(undefined, 0), device(0), { zeroCopy: true, iodepth: 4, bs: 4096 })).toBe(
      "grants: gntalloc limit none, 0 pages in the device's pools, 4 for device buffers",
    );
  });

  it('refuses device buffers that cannot all be granted before the run, with the limit to ask for', () => {
    expect(() => grantRoom(platform(1024, 508), device(508), { zeroCopy: true, iodepth: 32, bs: 1 << 20 })).toThrow(
      /--zero-copy: 32 device buffers of 1048576 bytes need 8192 grant pages, and only 516 of gntalloc's limit of 1024 are left .*echo 8700 > \/sys\/module\/xen_gntalloc\/parameters\/limit/,
    );
    // Exactly what is left is enough.
    expect(grantRoom(platform(1024, 508), device(508), { zeroCopy: true, iodepth: 2, bs: 258 * 4096 })).toContain('516 for device buffers');
  });
});
