/**
 * kbench (scripts/xen/kbench.c), the kernel side of the Xen suite's
 * comparison, built as the testbed builds it and run on a file here: it keeps
 * the asked number in flight with O_DIRECT, leaves the ramp out, reports
 * what it did in one JSON object, and refuses bad arguments.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SRC = fileURLToPath(new URL('../../scripts/xen/kbench.c', import.meta.url));
// Beside the checkout, not in /tmp: tmpfs refuses O_DIRECT.
const ROOT = fileURLToPath(new URL('../..', import.meta.url));

describe('kbench', () => {
  const dir = mkdtempSync(join(ROOT, '.kbench-'));
  const bin = join(dir, 'kbench');
  const file = join(dir, 'disk.img');

  it('builds statically, as the testbed builds it, and refuses bad arguments with status 2', () => {
    const cc = spawnSync('gcc', ['-O2', '-Wall', '-Werror', '-static', '-pthread', '-o', bin, SRC], { encoding: 'utf8' });
    expect(cc.status, cc.stderr).toBe(0);
    for (const args of [
      [],
      [file, 'read', '4095', '1', '4096', '1', '0'],
      [file, 'read', '4096', '0', '4096', '1', '0'],
      [file, 'read', '4096', '1', '4096', '0', '0'],
      [file, 'read', '4096', '1', '4096', '1', '0', '0'],
      [file, 'read', '4096', '1', '4096', '1', '0', '17'],
    ]) {
      const r = spawnSync(bin, args, { encoding: 'utf8' });
      expect(r.status, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(/^(usage|kbench: bad arguments)/);
    }
  });

  it.each([
    ['randread', 4096, 8, 1],
    ['write', 65536, 4, 1],
    ['randread', 4096, 8, 2],
  ] as const)(
    '%s, %i bytes, %i in flight, %i threads: whole I/Os over the measured phase, and the CPU they took',
    (rw, bs, depth, threads) => {
      writeFileSync(file, Buffer.alloc(4 << 20));
      const args = [file, rw, String(bs), String(depth), String(4 << 20), '0.3', '0.1'];
      const r = spawnSync(bin, threads === 1 ? args : [...args, String(threads)], { encoding: 'utf8' });
      if (r.status === 1 && /Invalid argument/.test(r.stderr)) return; // a filesystem without O_DIRECT: nothing to measure here
      expect(r.status, r.stderr).toBe(0);
      const j = JSON.parse(r.stdout) as {
        ios: number;
        seconds: number;
        iops: number;
        bandwidth_bytes_per_s: number;
        process_cpu_s: number;
        machine_busy_s: number;
        machine_total_s: number;
        threads: number;
      };
      expect(Object.keys(j).sort()).toEqual([
        'bandwidth_bytes_per_s',
        'iops',
        'ios',
        'machine_busy_s',
        'machine_total_s',
        'process_cpu_s',
        'seconds',
        'threads',
      ]);
      expect(j.threads).toBe(threads);
      expect(j.ios).toBeGreaterThan(depth * threads);
      // The measured phase is the runtime (the ramp left out), plus the last I/Os draining.
      expect(j.seconds).toBeGreaterThanOrEqual(0.29);
      expect(j.seconds).toBeLessThan(1.5);
      expect(j.iops).toBeCloseTo(j.ios / j.seconds, 0);
      expect(Math.abs(j.bandwidth_bytes_per_s - j.iops * bs) / j.bandwidth_bytes_per_s).toBeLessThan(1e-5);
      expect(j.machine_total_s).toBeGreaterThan(0);
    },
  );

  afterAll(() => rmSync(dir, { recursive: true, force: true }));
});
