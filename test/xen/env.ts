/**
 * What the Xen suite knows about the testbed it runs in (scripts/xen): the
 * vbds dom0 attached, the marker it wrote, and how to ask dom0 for things
 * only it can do (a backing file's checksum, `xl block-detach`).
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
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

/** Loads xen-blkfront for one vbd alone: autoprobe off, then bind that one device. */
export function kernelDriverFor(vdev: number, name: string): string {
  const dev = `/dev/${name}`;
  if (existsSync(dev)) return dev;
  writeFileSync('/sys/bus/xen/drivers_autoprobe', '0');
  const mod = spawnSync('modprobe', ['xen-blkfront'], { encoding: 'utf8' });
  assert.equal(mod.status, 0, `modprobe xen-blkfront: ${mod.stderr}`);
  writeFileSync('/sys/bus/xen/drivers/vbd/bind', `vbd-${vdev}`);
  const deadline = Date.now() + 30_000;
  while (!existsSync(dev)) {
    assert.ok(Date.now() < deadline, `${dev} did not appear`);
    spawnSync('sleep', ['0.2']);
  }
  assert.ok(!existsSync(`/sys/bus/xen/devices/vbd-${XVDB}/driver`), "the kernel left the driver's vbd alone");
  return dev;
}
