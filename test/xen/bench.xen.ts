/**
 * blkbench through the driver against the same workload through the
 * kernel's own xen-blkfront (dd with O_DIRECT), in the same boot, on two vbds
 * of the same size backed the same way. Emulation makes absolute figures
 * meaningless; the ratio is the figure.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MiB, XVDB, XVDD, report } from './env.js';

const BLKBENCH = fileURLToPath(new URL('../../examples/blkbench/cli.js', import.meta.url));

interface Workload { name: string; rw: 'read' | 'write'; bs: number; count: number }
const WORKLOADS: Workload[] = [
  { name: 'sequential read, 4 KiB, 1 in flight', rw: 'read', bs: 4096, count: 2048 },
  { name: 'sequential read, 1 MiB, 1 in flight', rw: 'read', bs: MiB, count: 48 },
  { name: 'sequential write, 1 MiB, 1 in flight', rw: 'write', bs: MiB, count: 48 },
];

/** Bytes per second through the driver, from blkbench's JSON. */
function blkbench(w: Workload): number {
  const r = spawnSync(process.execPath, [BLKBENCH, '--xen', '--vdev', String(XVDB), '--rw', w.rw,
    '--bs', String(w.bs), '--iodepth', '1', '--size', String(w.bs * w.count), '--number-ios', String(w.count), '--json'],
  { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `blkbench failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout) as { bandwidth_bytes_per_s: number; ios: number; features: string };
  assert.equal(out.ios, w.count);
  return out.bandwidth_bytes_per_s;
}

/** Bytes per second through the kernel's xen-blkfront, from dd's own timing. */
function kernel(w: Workload, dev: string): number {
  const io = w.rw === 'read'
    ? [`if=${dev}`, 'of=/dev/null', 'iflag=direct']
    : ['if=/dev/zero', `of=${dev}`, 'oflag=direct'];
  const r = spawnSync('/usr/bin/dd', [...io, `bs=${w.bs}`, `count=${w.count}`], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(r.status, 0, `dd failed: ${r.stderr}`);
  const m = /^(\d+) bytes .* copied, ([\d.]+) s/m.exec(r.stderr);
  assert.ok(m, `dd's report: ${r.stderr}`);
  assert.equal(Number(m[1]), w.bs * w.count);
  return Number(m[1]) / Number(m[2]);
}

/** Loads xen-blkfront for xvdd alone: autoprobe off, then bind that one device. */
function kernelDriverFor(vdev: number): string {
  writeFileSync('/sys/bus/xen/drivers_autoprobe', '0');
  const mod = spawnSync('modprobe', ['xen-blkfront'], { encoding: 'utf8' });
  assert.equal(mod.status, 0, `modprobe xen-blkfront: ${mod.stderr}`);
  writeFileSync('/sys/bus/xen/drivers/vbd/bind', `vbd-${vdev}`);
  const dev = '/dev/xvdd';
  const deadline = Date.now() + 30_000;
  while (!existsSync(dev)) {
    assert.ok(Date.now() < deadline, `${dev} did not appear`);
    spawnSync('sleep', ['0.2']);
  }
  assert.ok(!existsSync(`/sys/bus/xen/devices/vbd-${XVDB}/driver`), 'the kernel left the driver\'s vbd alone');
  return dev;
}

test('bench: blkbench against the kernel\'s xen-blkfront, same workloads, same boot', { timeout: 600_000 }, () => {
  const dev = kernelDriverFor(XVDD);
  console.log(`# kernel xen-blkfront bound to vbd-${XVDD}: ${readFileSync(`/sys/block/xvdd/size`, 'utf8').trim()} sectors`);
  const mibs = (b: number) => (b / MiB).toFixed(1);
  for (const w of WORKLOADS) {
    // Alternate the two, twice, and keep each one's better run.
    const ours = Math.max(blkbench(w), blkbench(w));
    const theirs = Math.max(kernel(w, dev), kernel(w, dev));
    report(`${w.name}: blkbench ${mibs(ours)} MiB/s, kernel xen-blkfront ${mibs(theirs)} MiB/s, ratio ${(ours / theirs).toFixed(2)}`);
    assert.ok(ours > 0 && theirs > 0);
  }
});
