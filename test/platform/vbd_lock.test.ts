/**
 * The real guest's vbd claims (HostVbdOwnership), against a sysfs tree and
 * lock directory of the test's own: the kernel's binding read from the
 * `driver` link; the flock held by another process refused with its pid;
 * that process killed with SIGKILL and the vbd taken at once, naming it;
 * a clean release leaving nothing behind; a lock directory this user may
 * not write giving XEN_EACCES; a /dev/xen node it may not open likewise.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HostVbdOwnership } from '../../src/index.js';
import { deviceOpenError } from '../../src/ffi/koffi.js';

const LOCK_MODULE = fileURLToPath(new URL('../../dist/src/platform/vbd_lock.js', import.meta.url));
let dir: string;
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) c.kill('SIGKILL');
  if (dir) rmSync(dir, { recursive: true, force: true });
});

function fresh(): { lockDir: string; sysfs: string } {
  dir = mkdtempSync(join(tmpdir(), 'vbd-lock-'));
  const sysfs = join(dir, 'sys/bus/xen/devices');
  mkdirSync(sysfs, { recursive: true });
  return { lockDir: join(dir, 'lock'), sysfs };
}

/** A child process that claims `key` and says "held" once it has it. */
async function holder(lockDir: string, sysfs: string, key: string): Promise<ChildProcess> {
  const script = `const { HostVbdOwnership } = await import(${JSON.stringify(LOCK_MODULE)});
    const o = new HostVbdOwnership({ lockDir: ${JSON.stringify(lockDir)}, sysfs: ${JSON.stringify(sysfs)} });
    await o.claim(${JSON.stringify(key)}, 'xvdd');
    process.stdout.write('held\\n');
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  children.push(child);
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (d: Buffer) => d.toString().includes('held') && resolve());
    child.once('exit', (code) => reject(new Error(`holder exited ${code}`)));
  });
  return child;
}

describe('vbd claims on a real guest (flock and sysfs)', () => {
  it("the kernel's binding: owner 'kernel' and BLKIF_EBUSY naming its disk", async () => {
    const { lockDir, sysfs } = fresh();
    const dev = join(sysfs, 'vbd-51760');
    mkdirSync(join(dev, 'block/xvdd'), { recursive: true });
    symlinkSync('../../../../bus/xen/drivers/vbd', join(dev, 'driver'));
    const o = new HostVbdOwnership({ lockDir, sysfs });
    expect(await o.owner('51760')).toEqual({ kind: 'kernel', driver: 'vbd', disk: 'xvdd' });
    const err = await o.claim('51760', 'xvdd').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BLKIF_EBUSY' });
    expect((err as Error).message).toMatch(/vbd 51760 \(xvdd\) belongs to the guest's kernel .*\/dev\/xvdd.*unbind/);
    // Refused before the lock: nothing was created.
    expect(() => readFileSync(join(lockDir, 'vbd-51760.lock'))).toThrow();
    // A device with no driver bound is free.
    mkdirSync(join(sysfs, 'vbd-51728'));
    expect(await o.owner('51728')).toBeNull();
  });

  it('another process: refused with its pid; SIGKILLed, the vbd is taken at once and names it', async () => {
    const { lockDir, sysfs } = fresh();
    const child = await holder(lockDir, sysfs, '51760');
    const o = new HostVbdOwnership({ lockDir, sysfs });
    expect(await o.owner('51760')).toEqual({ kind: 'process', pid: child.pid, self: false });
    const err = await o.claim('51760', 'xvdd').catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'BLKIF_EBUSY' });
    expect((err as Error).message).toBe(
      `vbd 51760 (xvdd) is held by process ${child.pid} (lock ${join(lockDir, 'vbd-51760.lock')}); nothing was written`,
    );

    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await exited;
    const claim = await o.claim('51760', 'xvdd');
    expect(claim.abandonedBy).toBe(child.pid);
    expect(readFileSync(join(lockDir, 'vbd-51760.lock'), 'utf8')).toBe(`${process.pid}\n`);
    expect(await o.owner('51760')).toEqual({ kind: 'process', pid: process.pid, self: true });
    // The same process twice is refused too.
    await expect(o.claim('51760', 'xvdd')).rejects.toThrow(`is held by this process (pid ${process.pid})`);

    claim.release();
    claim.release();
    expect(readFileSync(join(lockDir, 'vbd-51760.lock'), 'utf8')).toBe('');
    expect(await o.owner('51760')).toBeNull();
    const again = await o.claim('51760', 'xvdd');
    expect(again.abandonedBy).toBeNull();
    again.release();
  });

  it('a vbd key that is not a name is refused', async () => {
    const { lockDir, sysfs } = fresh();
    const o = new HostVbdOwnership({ lockDir, sysfs });
    await expect(o.claim('../etc', 'x')).rejects.toMatchObject({ code: 'BLKIF_EINVAL' });
  });

  it.runIf(process.getuid?.() === 0)('a lock directory this user may not write: XEN_EACCES naming it (run as nobody)', () => {
    const { lockDir, sysfs } = fresh();
    mkdirSync(lockDir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const script = `const { HostVbdOwnership } = await import(${JSON.stringify(LOCK_MODULE)});
      try { await new HostVbdOwnership({ lockDir: ${JSON.stringify(lockDir)}, sysfs: ${JSON.stringify(sysfs)} }).claim('51728', 'xvdb'); console.log('claimed'); }
      catch (e) { console.log(e.code + ': ' + e.message); }`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid: 65534, gid: 65534, encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.stdout).toContain(`XEN_EACCES: ${join(lockDir, 'vbd-51728.lock')}: cannot create the vbd lock (EACCES)`);
  });

  it('a /dev/xen node this user may not open: XEN_EACCES naming the node and the fix', () => {
    const err = deviceOpenError('xengntshr_open', '/dev/xen/gntalloc', 'xen-gntalloc', constants.errno.EACCES);
    expect(err.code).toBe('XEN_EACCES');
    expect(err.message).toMatch(/^\/dev\/xen\/gntalloc: permission denied .*udev rule or chgrp/);
    expect(deviceOpenError('xenevtchn_open', '/dev/xen/evtchn', 'xen-evtchn', constants.errno.ENOENT).code).toBe('XEN_ENODEV');
  });
});
