/**
 * What the Xen suite knows about the testbed it runs in (scripts/xen): the
 * vbds dom0 attached, the marker it wrote, and how to ask dom0 for things
 * only it can do (a backing file's checksum, `xl block-detach`).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openXenPlatform, type XenPlatform, type XenstoreClient } from '../../src/index.js';

/** xvdb: read-write, 64 MiB, dom0 wrote the marker at both ends. */
export const XVDB = 51728;
/** xvdc: read-only, 8 MiB, the marker at the start. */
export const XVDC = 51744;
/** xvdd: read-write, 64 MiB, for the kernel's own xen-blkfront. */
export const XVDD = 51760;
/** xvde: read-write, 64 MiB, served by QEMU's qdisk backend, for the driver. */
export const XVDE = 51776;
/** xvdf: read-write, 64 MiB, served by QEMU's qdisk backend, for the kernel's own xen-blkfront. */
export const XVDF = 51792;
/** xvdh: read-write, 64 MiB, xen-blkback, for the kernel's xen-blkfront at its module defaults (the reference row). */
export const XVDH = 51824;
export const MiB = 1024 * 1024;

/** The marker dom0 wrote, from the domU's kernel command line. */
export const MARKER = process.env.XEN_SUITE_MARKER ?? '';

/** Opens the real platform: /dev/xen/xenbus, libxengnttab, libxenevtchn. */
export function platform(): Promise<XenPlatform> {
  return openXenPlatform({ xenstore: { defaultTimeoutMs: 30_000 } });
}

let sequence = 0;

/**
 * Asks dom0's init (scripts/xen/dom0-init.sh) to do something and waits for
 * the answer: writes `data/request` = "<n> <command> <args>" and watches
 * `data/response` for "<n> <answer>".
 */
export async function askDom0(xs: XenstoreClient, command: string, ...args: string[]): Promise<string> {
  return askDom0Within(60_000, xs, command, ...args);
}

/** {@link askDom0}, waiting up to `ms` for the answer. */
export async function askDom0Within(ms: number, xs: XenstoreClient, command: string, ...args: string[]): Promise<string> {
  const n = String(++sequence) + '-' + process.pid;
  let settle!: (answer: string) => void;
  const answered = new Promise<string>((resolve) => {
    settle = resolve;
  });
  const watch = await xs.watch('data/response', async () => {
    const value = await xs.readOptional('data/response');
    if (value !== undefined && value.startsWith(n + ' ')) settle(value.slice(n.length + 1));
  });
  try {
    await xs.write('data/request', [n, command, ...args].join(' '));
    const timeout = new Promise<never>((_, reject) => {
      setTimeout(() => reject(new Error(`dom0 did not answer "${command}" within ${ms / 1000} s`)), ms).unref();
    });
    return await Promise.race([answered, timeout]);
  } finally {
    await watch.unwatch();
  }
}

/** One line the host's test:xen picks out of the console and repeats in its summary. */
export function report(line: string): void {
  console.log(`# xen-bench ${line}`);
}

/** blkbench's binary, for the tests that run it in its own process. */
export const BLKBENCH = fileURLToPath(new URL('../../src/cli/blkbench/cli.js', import.meta.url));

/**
 * Runs blkbench on one of this guest's vbds (`--xen --json` and `args`,
 * `node`'s own flags first), fails the test on a non-zero exit, and returns
 * its JSON report.
 */
export function blkbenchJson<T>(vdev: number, args: string[], opts: { node?: string[]; timeoutMs?: number } = {}): T {
  const r = spawnSync(process.execPath, [...(opts.node ?? []), BLKBENCH, '--xen', '--vdev', String(vdev), '--json', ...args], {
    encoding: 'utf8',
    timeout: opts.timeoutMs ?? 180_000,
  });
  assert.equal(r.status, 0, `blkbench ${args.join(' ')} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as T;
}

/** xen-blkfront's module parameters that shape a connection: what a fair comparison must match. */
export interface KernelDriverParams {
  /** log2 of the pages per ring (Linux's default 0: one page, 32 slots). */
  max_ring_page_order: number;
  /** Segments per indirect request (Linux's default 32: 128 KiB). */
  max_indirect_segments: number;
}

/** What the kernel's driver runs with: its module parameters, and the disk's queue settings. */
export function kernelDriverSettings(name: string): string {
  const read = (p: string) => {
    try {
      return readFileSync(p, 'utf8').trim();
    } catch {
      return '?';
    }
  };
  const params = ['max_ring_page_order', 'max_indirect_segments', 'max_queues', 'feature_persistent']
    .map((k) => `${k}=${read(`/sys/module/xen_blkfront/parameters/${k}`)}`)
    .join(' ');
  const q = `/sys/block/${name}/queue`;
  const hw = existsSync(`/sys/block/${name}/mq`) ? readdirSync(`/sys/block/${name}/mq`).length : 0;
  return (
    `${params}; ${name}: ${hw} hardware queue(s), nr_requests ${read(`${q}/nr_requests`)}, max_segments ${read(`${q}/max_segments`)}, ` +
    `max_sectors_kb ${read(`${q}/max_sectors_kb`)}, scheduler ${read(`${q}/scheduler`)}`
  );
}

function currentParams(): KernelDriverParams | null {
  try {
    return {
      max_ring_page_order: Number(readFileSync('/sys/module/xen_blkfront/parameters/max_ring_page_order', 'utf8')),
      max_indirect_segments: Number(readFileSync('/sys/module/xen_blkfront/parameters/max_indirect_segments', 'utf8')),
    };
  } catch {
    return null;
  }
}

/**
 * Loads xen-blkfront for one vbd alone: autoprobe off, then bind that one
 * device. An already loaded module is used as it is.
 */
export function kernelDriverFor(vdev: number, name: string): string {
  const dev = `/dev/${name}`;
  if (existsSync(dev)) return dev;
  writeFileSync('/sys/bus/xen/drivers_autoprobe', '0');
  const mod = spawnSync('modprobe', ['xen-blkfront'], { encoding: 'utf8' });
  assert.equal(mod.status, 0, `modprobe xen-blkfront: ${mod.stderr}`);
  return bindKernelDriver(vdev, dev);
}

function bindKernelDriver(vdev: number, dev: string): string {
  writeFileSync('/sys/bus/xen/drivers/vbd/bind', `vbd-${vdev}`);
  const deadline = Date.now() + 30_000;
  while (!existsSync(dev)) {
    assert.ok(Date.now() < deadline, `${dev} did not appear`);
    spawnSync('sleep', ['0.2']);
  }
  assert.ok(!existsSync(`/sys/bus/xen/devices/vbd-${XVDB}/driver`), "the kernel left the driver's vbd alone");
  return dev;
}

/**
 * Loads xen-blkfront with `params` and binds it to one vbd, unloading the
 * module first if it runs with other parameters: the kernel's driver given
 * what ours negotiated, or its defaults. A vbd the kernel drove before must
 * not be bound again (the kernel's xenbus remembers it Closed and would wait
 * for ever): it is left unbound, so each configuration gets its own vbd.
 */
export function kernelDriverWith(vdev: number, name: string, params: KernelDriverParams): string {
  const dev = `/dev/${name}`;
  const now = currentParams();
  if (
    now !== null &&
    now.max_ring_page_order === params.max_ring_page_order &&
    now.max_indirect_segments === params.max_indirect_segments
  ) {
    return kernelDriverFor(vdev, name);
  }
  writeFileSync('/sys/bus/xen/drivers_autoprobe', '0');
  if (now !== null) {
    for (const b of readdirSync('/sys/bus/xen/drivers/vbd').filter((e) => e.startsWith('vbd-'))) {
      assert.notEqual(b, `vbd-${vdev}`, `vbd-${vdev} was the kernel's already`);
      writeFileSync('/sys/bus/xen/drivers/vbd/unbind', b);
    }
    const rm = spawnSync('rmmod', ['xen_blkfront'], { encoding: 'utf8' });
    assert.equal(rm.status, 0, `rmmod xen_blkfront: ${rm.stderr}`);
  }
  const args = Object.entries(params).map(([k, v]) => `${k}=${v}`);
  const mod = spawnSync('modprobe', ['xen-blkfront', ...args], { encoding: 'utf8' });
  assert.equal(mod.status, 0, `modprobe xen-blkfront: ${mod.stderr}`);
  return bindKernelDriver(vdev, dev);
}
