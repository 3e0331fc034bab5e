/**
 * Where the driver's guest CPU goes on a real Xen, and what each mechanism
 * buys there. For a few workloads: the same blkbench run with each variant
 * (how wake-ups arrive, device buffers, queues), warm (a ramp left out), one
 * line each with IOPS and CPU per I/O; then blkbench's own CPU profile of the
 * measured phase (--cpu-profile), by part and by function. Not part of the
 * default suite: run it with
 *   XEN_SUITE_ARGS="suite=profile" npm run test:xen
 */
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { describe, summarize, type CpuProfile } from '../../bench/cpuprofile.js';
import { MiB, XVDB, blkbenchJson } from './env.js';
import { withGrantLimit } from './compare.js';

function run(args: string[], node: string[] = []): Record<string, unknown> {
  // A variant may bring its own --ramp-time.
  const ramp = args.includes('--ramp-time') ? [] : ['--ramp-time', '2'];
  return blkbenchJson(XVDB, ['--no-latency', '--runtime', '3', ...ramp, ...args], { node });
}

const CASES: Array<{ name: string; args: string[] }> = [
  { name: '4 KiB random read, 32 in flight', args: ['--rw', 'randread', '--bs', '4k', '--iodepth', '32'] },
  { name: '4 KiB random read, 1 in flight', args: ['--rw', 'randread', '--bs', '4k', '--iodepth', '1'] },
  { name: '1 MiB sequential read, 8 in flight', args: ['--rw', 'read', '--bs', String(MiB), '--iodepth', '8'] },
];

const VARIANTS: Array<{ name: string; args: string[]; node?: string[] }> = [
  { name: 'bounced, wake-ups through a worker thread', args: ['--wakeup', 'thread'] },
  { name: 'bounced, wake-ups on the event loop', args: [] },
  { name: 'device buffers, wake-ups through a worker thread', args: ['--zero-copy', '--wakeup', 'thread'] },
  { name: 'device buffers, wake-ups on the event loop', args: ['--zero-copy'] },
  { name: 'device buffers, one queue', args: ['--zero-copy', '--queues', '1'] },
  // Under emulation V8's optimising compiler is slow: how much of the cost is a warm-up still going on after 2 s?
  { name: 'device buffers, one queue, 12 s ramp', args: ['--zero-copy', '--queues', '1', '--ramp-time', '12'] },
  // V8's helper threads (parallel scavenges, concurrent compiles) take half the process's CPU here: without them?
  { name: 'device buffers, one queue, node --single-threaded-gc', args: ['--zero-copy', '--queues', '1'], node: ['--single-threaded-gc'] },
  { name: 'device buffers, one queue, node --single-threaded', args: ['--zero-copy', '--queues', '1'], node: ['--single-threaded'] },
];

test("profile: the guest's clock source", () => {
  const cs = (f: string) => readFileSync(`/sys/devices/system/clocksource/clocksource0/${f}`, 'utf8').trim();
  console.log(`# xen-profile clocksource: ${cs('current_clocksource')} (available: ${cs('available_clocksource')})`);
});

for (const c of CASES) {
  test(`profile: ${c.name}`, { timeout: 600_000 }, () =>
    withGrantLimit(16384, () => {
      for (const v of VARIANTS) {
        const r = run([...c.args, ...v.args], v.node);
        console.log(
          `# xen-profile ${c.name}, ${v.name}: ${String(r.iops)} IOPS, per I/O ${JSON.stringify(r.cpu_us_per_io)} µs, ` +
            `cpu ${JSON.stringify(r.cpu)}, ring ${JSON.stringify(r.ring)}, pool ${JSON.stringify(r.pool)}`,
        );
      }
      const file = `/tmp/profile-${process.pid}.cpuprofile`;
      run([...c.args, '--zero-copy', '--cpu-profile', file]);
      const lines = describe(summarize(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile), 20);
      console.log(lines.map((l) => `# xen-profile ${c.name}: ${l}`).join('\n'));
    }),
  );
}

test('profile: what one system call, clock read, FFI call and event-channel operation costs in this guest', async () => {
  const { openLibrary } = await import('../../src/ffi/koffi.js');
  const { platform } = await import('./env.js');
  const libc = openLibrary(['libc.so.6'], 'libc6');
  const getpid = libc.func('int getpid()');
  const getppid = libc.func('long syscall(long n)');
  const N = 2000;
  const time = (what: string, fn: () => unknown) => {
    for (let i = 0; i < 200; i++) fn();
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) fn();
    const us = Number(process.hrtime.bigint() - t0) / 1e3 / N;
    console.log(`# xen-profile cost: ${what}: ${us.toFixed(1)} µs`);
  };
  const SYS_getppid = 110;
  time('JavaScript call that does nothing', () => 0);
  time('performance.now() (a clock read)', () => performance.now());
  time('koffi call to getpid() (glibc, no system call)', () => getpid());
  time('koffi call to syscall(SYS_getppid) (one system call)', () => getppid(SYS_getppid));
  const p = await platform();
  try {
    const a = p.evtchn.allocUnbound(p.domid);
    const b = p.evtchn.bindInterdomain(p.domid, a.port);
    time('event-channel notify (ioctl, then a hypercall)', () => a.notify());
    await new Promise((r) => setTimeout(r, 100));
    a.close();
    b.close();
  } finally {
    await p.close();
  }
});
