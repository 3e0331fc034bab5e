/**
 * Never take a vbd someone else owns, on a real guest: the kernel's
 * xen-blkfront bound to xvdd and reading it while blkbench (read and
 * write), xenfs and the API are pointed at it (all refused with
 * BLKIF_EBUSY, nothing written, the kernel's reads never failing and its
 * data intact); two blkbench processes on xvdb (the second refused with the
 * first's pid, the first finishing its verify run untouched); a process
 * killed with SIGKILL while holding xvdb and the vbd opened again at once;
 * and blkbench and xenfs as an unprivileged user given the three
 * /dev/xen nodes, while a user without them gets XEN_EACCES.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { listBlockDevices, openBlockDevice, XenbusState, type XenPlatform } from '../../src/index.js';
import { BLKBENCH, MiB, XVDB, XVDD, kernelDriverFor, platform, report } from './env.js';

const XENFS = fileURLToPath(new URL('../../src/cli/xenfs/cli.js', import.meta.url));
const LOCK_DIR = '/run/lock/xen-blkfront';

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a node CLI in its own process, asynchronously (this process keeps serving its xenstore). */
function run(cli: string, args: string[], opts: { uid?: number; gid?: number; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cli, ...args], { uid: opts.uid, gid: opts.gid, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 180_000);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The frontend directory's own keys and values (what a write by anyone would change). */
async function frontendKeys(p: XenPlatform, vdev: number): Promise<Record<string, string>> {
  const fe = `/local/domain/${p.domid}/device/vbd/${vdev}`;
  const keys = await p.xenstore.directory(fe);
  return Object.fromEntries(await Promise.all(keys.map(async (k) => [k, await p.xenstore.read(`${fe}/${k}`)] as const)));
}

/** Waits until `child` holds `vdev`: its pid in the lock file and the frontend Connected. */
async function holding(p: XenPlatform, child: ChildProcess, vdev: number): Promise<void> {
  const deadline = Date.now() + 90_000;
  const lock = `${LOCK_DIR}/vbd-${vdev}.lock`;
  for (;;) {
    assert.equal(child.exitCode, null, 'the holder is still running');
    const pid = existsSync(lock) ? readFileSync(lock, 'utf8').trim() : '';
    const state = await p.xenstore.readOptional(`/local/domain/${p.domid}/device/vbd/${vdev}/state`);
    if (pid === String(child.pid) && state === String(XenbusState.Connected)) return;
    assert.ok(Date.now() < deadline, `process ${child.pid} did not take vbd ${vdev} (lock "${pid}", state ${state})`);
    await sleep(200);
  }
}

test(
  "ownership: the kernel's vbd is refused to blkbench, xenfs and the API; the kernel reads on, untouched",
  { timeout: 400_000 },
  async () => {
    const dev = kernelDriverFor(XVDD, 'xvdd');
    const data = randomBytes(MiB);
    writeFileSync('/tmp/own.bin', data);
    const w = spawnSync('dd', ['if=/tmp/own.bin', `of=${dev}`, 'bs=1048576', 'seek=1', 'oflag=direct'], { encoding: 'utf8' });
    assert.equal(w.status, 0, `dd to ${dev}: ${w.stderr}`);
    const p = await platform();
    const dmesgBefore = spawnSync('dmesg', { encoding: 'utf8' }).stdout.split('\n').length;
    rmSync('/tmp/own.stop', { force: true });
    // The kernel's reads, on and on, while everything else is pointed at its disk.
    const loop = spawn(
      'sh',
      [
        '-c',
        `while [ ! -e /tmp/own.stop ]; do dd if=${dev} of=/dev/null bs=65536 count=64 iflag=direct 2>/dev/null && echo ok || echo FAIL; done`,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    let loopOut = '';
    loop.stdout.on('data', (d: Buffer) => (loopOut += d.toString()));
    const loopDone = new Promise((r) => loop.once('exit', r));
    try {
      const before = await frontendKeys(p, XVDD);
      assert.equal(before.state, String(XenbusState.Connected), 'the kernel drives xvdd');
      const refusals: string[] = [];
      for (const rw of ['randread', 'write']) {
        const r = await run(BLKBENCH, ['--xen', '--vdev', String(XVDD), '--rw', rw, '--runtime', '3']);
        assert.notEqual(r.code, 0, `blkbench --rw ${rw} on the kernel's vbd must fail`);
        assert.match(r.stderr, /^blkbench: BLKIF_EBUSY: vbd 51760 \(xvdd\) belongs to the guest's kernel .*nothing was written/m, r.stderr);
        refusals.push(r.stderr.trim());
      }
      const fs = await run(XENFS, ['--xen', '--vdev', String(XVDD), 'ls', '/']);
      assert.notEqual(fs.code, 0);
      assert.match(fs.stderr, /^xenfs: vbd 51760 \(xvdd\) belongs to the guest's kernel.*\[BLKIF_EBUSY\]$/m, fs.stderr);
      refusals.push(fs.stderr.trim());
      await assert.rejects(openBlockDevice({ platform: p, vdev: XVDD, timeoutMs: 10_000 }), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'BLKIF_EBUSY');
        refusals.push(`openBlockDevice: ${err.code}: ${err.message}`);
        return true;
      });
      const listed = (await listBlockDevices(p)).find((d) => d.vdev === XVDD);
      assert.equal(listed?.owner, 'kernel');
      const disks = await run(XENFS, ['--xen', 'disks']);
      assert.equal(disks.code, 0, disks.stderr);
      assert.match(disks.stdout, /^xvdd +vdev 51760 .*owner kernel/m, disks.stdout);
      await sleep(1000);
      assert.deepEqual(await frontendKeys(p, XVDD), before, "nothing in xvdd's frontend directory changed");
      for (const line of refusals) console.log(`# refusal: ${line.replace(/\n/g, ' | ')}`);
    } finally {
      writeFileSync('/tmp/own.stop', '');
      await loopDone;
      await p.close();
    }
    const lines = loopOut.trim().split('\n');
    assert.ok(lines.length >= 2, `the kernel read on meanwhile (${lines.length} passes)`);
    assert.deepEqual(
      lines.filter((l) => l !== 'ok'),
      [],
      "every read of the kernel's succeeded",
    );
    const r = spawnSync('dd', [`if=${dev}`, 'of=/tmp/own.back', 'bs=1048576', 'skip=1', 'count=1', 'iflag=direct'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    assert.ok(readFileSync('/tmp/own.back').equals(data), "the kernel's data read back intact");
    const dmesg = spawnSync('dmesg', { encoding: 'utf8' })
      .stdout.split('\n')
      .slice(dmesgBefore - 1)
      .join('\n');
    assert.doesNotMatch(dmesg, /kernel BUG|still pending|blkfront.*(error|fail)/i, "the guest's kernel logged nothing wrong");
    report(
      `ownership: the kernel's xvdd refused to blkbench (read, write), xenfs and the API; ${lines.length} kernel read passes, none failed`,
    );
  },
);

test('ownership: a second blkbench on a vbd held by a first is refused; the first verifies untouched', { timeout: 300_000 }, async () => {
  const p = await platform();
  const first = spawn(
    process.execPath,
    [BLKBENCH, '--xen', '--vdev', String(XVDB), '--json', '--rw', 'randrw', '--verify', '--iodepth', '8', '--runtime', '15'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let out = '';
  let err = '';
  first.stdout.on('data', (d: Buffer) => (out += d.toString()));
  first.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const done = new Promise<number | null>((r) => first.once('exit', (code) => r(code)));
  try {
    await holding(p, first, XVDB);
    const second = await run(BLKBENCH, ['--xen', '--vdev', String(XVDB), '--rw', 'randread', '--runtime', '2']);
    assert.equal(first.exitCode, null, 'the first was still running when the second was refused');
    assert.notEqual(second.code, 0);
    assert.match(
      second.stderr,
      new RegExp(
        `^blkbench: BLKIF_EBUSY: vbd 51728 \\(xvdb\\) is held by process ${first.pid} \\(lock ${LOCK_DIR}/vbd-51728.lock\\); nothing was written`,
        'm',
      ),
      second.stderr,
    );
    console.log(`# refusal: ${second.stderr.trim()}`);
    const listed = (await listBlockDevices(p)).find((d) => d.vdev === XVDB);
    assert.deepEqual([listed?.owner, listed?.ownerPid], ['process', first.pid]);
  } finally {
    await p.close();
  }
  assert.equal(await done, 0, `the first blkbench: ${err}`);
  const rep = JSON.parse(out) as { ios: number; verify_mismatches: number; verify_checked: number; reconnects: number };
  assert.equal(rep.verify_mismatches, 0);
  assert.ok(rep.verify_checked > 0);
  assert.equal(rep.reconnects, 0, 'the first never lost its connection');
  report(`ownership: a second blkbench refused; the first verified ${rep.verify_checked} blocks, 0 mismatches, 0 reconnects`);
});

test('ownership: a process killed with SIGKILL while holding a vbd; the next opens it at once', { timeout: 300_000 }, async () => {
  const p = await platform();
  try {
    const victim = spawn(
      process.execPath,
      [BLKBENCH, '--xen', '--vdev', String(XVDB), '--rw', 'randrw', '--iodepth', '16', '--runtime', '120'],
      { stdio: 'ignore' },
    );
    const gone = new Promise((r) => victim.once('exit', r));
    await holding(p, victim, XVDB);
    await sleep(1500); // I/O in flight when it dies
    victim.kill('SIGKILL');
    await gone;
    const t0 = Date.now();
    const dev = await openBlockDevice({ platform: p, vdev: XVDB, timeoutMs: 30_000 });
    const ms = Date.now() - t0;
    try {
      assert.deepEqual(dev.info.takenOver, { state: 'Connected', pid: victim.pid });
      const data = randomBytes(MiB);
      await dev.write(4 * MiB, data);
      const back = await dev.read(4 * MiB, MiB);
      assert.ok(Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(data));
    } finally {
      await dev.close();
    }
    report(`ownership: vbd ${XVDB} taken over ${ms} ms after its holder (pid ${victim.pid}) was killed with SIGKILL while Connected`);
  } finally {
    await p.close();
  }
});

test(
  'ownership: blkbench and xenfs as an unprivileged user given the /dev/xen nodes; without them XEN_EACCES',
  { timeout: 300_000 },
  async () => {
    const nodes = ['/dev/xen/xenbus', '/dev/xen/gntalloc', '/dev/xen/evtchn'];
    const saved = nodes.map((n) => statSync(n));
    try {
      for (const n of nodes) {
        chownSync(n, 0, 1000);
        chmodSync(n, 0o660);
      }
      const user = { uid: 1000, gid: 1000 };
      const r = await run(BLKBENCH, ['--xen', '--vdev', String(XVDB), '--json', '--rw', 'randrw', '--verify', '--runtime', '2'], user);
      assert.equal(r.code, 0, `blkbench as uid 1000: ${r.stderr}`);
      const rep = JSON.parse(r.stdout) as { ios: number; verify_mismatches: number };
      assert.ok(rep.ios > 0);
      assert.equal(rep.verify_mismatches, 0);
      const disks = await run(XENFS, ['--xen', 'disks'], user);
      assert.equal(disks.code, 0, disks.stderr);
      assert.match(disks.stdout, /^xvdb +vdev 51728 .*owner free/m, disks.stdout);
      const denied = await run(BLKBENCH, ['--xen', '--vdev', String(XVDB), '--rw', 'randread', '--runtime', '2'], { uid: 1001, gid: 1001 });
      assert.notEqual(denied.code, 0);
      assert.match(
        denied.stderr,
        /^blkbench: XEN_EACCES: \/dev\/xen\/(gntalloc|evtchn|xenbus): permission denied \(uid 1001\)/m,
        denied.stderr,
      );
      console.log(
        `# refusal: ${denied.stderr
          .trim()
          .split('\n')
          .filter((l) => l.startsWith('blkbench:'))
          .join(' | ')}`,
      );
      report(
        `ownership: blkbench (${rep.ios} I/Os verified) and xenfs disks ran as uid 1000 with the three nodes; uid 1001 got XEN_EACCES`,
      );
    } finally {
      saved.forEach((s, i) => {
        chownSync(nodes[i]!, s.uid, s.gid);
        chmodSync(nodes[i]!, s.mode & 0o7777);
      });
    }
  },
);
