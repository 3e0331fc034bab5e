/**
 * The driver against a second real backend: QEMU's qdisk, which libxl
 * starts in dom0 for a `backendtype=qdisk` vbd. It offers less than Linux's
 * blkback (one queue, no persistent grants, no indirect descriptors), so the
 * driver's fallbacks are what runs here. Then the comparison against the
 * kernel's own xen-blkfront on a twin qdisk vbd.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { MiB, XVDE, XVDF, blkbenchJson, kernelDriverFor, kernelDriverSettings, report } from './env.js';
import { RAMP_S, RUNTIME_S, alternate, blkbench, compareLine, kbench, type Side, type Workload } from './compare.js';

test("qdisk: mixed writes and reads through QEMU's backend, every block checked, and what it offered", { timeout: 300_000 }, () => {
  const out = blkbenchJson<{ ios: number; writes: number; verify_mismatches: number; verify_checked: number; features: string }>(XVDE, [
    '--rw',
    'randrw',
    '--bs',
    '16k',
    '--iodepth',
    '16',
    '--size',
    '16m',
    '--runtime',
    '3',
    '--verify',
  ]);
  console.log(`# qdisk: ${out.features}; ${out.ios} I/Os (${out.writes} writes), ${out.verify_checked} blocks checked`);
  assert.equal(out.verify_mismatches, 0);
  assert.ok(out.writes > 0 && out.verify_checked >= 1024, 'every block was written and read back');
  assert.match(out.features, /persistent grants off/, 'qdisk offers no persistent grants');
});

/** A shorter table than blkback's: the three that tell the story. */
const WORKLOADS: Workload[] = [
  { name: '4 KiB random read, 32 in flight', rw: 'randread', bs: 4096, depth: 32 },
  { name: '1 MiB sequential read, 8 in flight', rw: 'read', bs: MiB, depth: 8 },
  { name: '1 MiB sequential write, 8 in flight', rw: 'write', bs: MiB, depth: 8 },
];

test("qdisk: blkbench at its defaults against the kernel's xen-blkfront, both on QEMU's backend", { timeout: 600_000 }, () => {
  const dev = kernelDriverFor(XVDF, 'xvdf');
  const bytes = Number(readFileSync('/sys/block/xvdf/size', 'utf8').trim()) * 512;
  report(`qdisk: the kernel's xen-blkfront: ${kernelDriverSettings('xvdf')}`);
  // One round each: the suite's time goes to the xen-blkback table.
  for (const w of WORKLOADS) {
    const [ours, kernel] = alternate<Side>([() => blkbench(w, XVDE), () => kbench(w, dev, bytes)], 1);
    compareLine(
      { ...w, name: `${w.name} (qdisk)` },
      'defaults',
      ours!,
      kernel!,
      'kernel',
      `${RAMP_S} s warm-up left out on both sides, ${RUNTIME_S} s measured`,
    );
  }
});
