/**
 * A device whose queues run in worker threads (openThreadedDevice and
 * QueueThread): each thread's I/O goes on its own ring with its own grants,
 * nothing of the device's thread per request; a backend offering fewer
 * queues than threads, a backend that closes, and a close that gives every
 * grant back.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { MessageChannel, Worker } from 'node:worker_threads';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { createSimHost, type SimHost } from '../../src/sim/index.js';
import { openBlockDevice, type BlockDeviceInfo } from '../../src/index.js';
import { openThreadedDevice } from '../../src/blkfront/threaded.js';
import { expectBytes, pattern } from '../helpers/blk.js';

const QUEUE_THREAD = new URL('../../dist/src/blkfront/queue_thread.js', import.meta.url).href;

/**
 * A worker that attaches its queue, writes `blocks` 64 KiB blocks of its
 * own pattern in its own slice (several in flight), reads them back, and
 * reports what it found, then waits for the device to release it.
 */
const JOB = `
const { workerData, parentPort } = require('node:worker_threads');
(async () => {
  const { QueueThread } = await import(workerData.module);
  let q;
  try {
    q = await QueueThread.attach(workerData.port);
  } catch (err) {
    parentPort.postMessage({ attachFailed: err.code ?? err.message });
    return;
  }
  const bs = 65536;
  const base = workerData.index * workerData.blocks * bs;
  const fill = (i) => (workerData.index * 31 + i * 7 + 1) & 0xff;
  await Promise.all(Array.from({ length: workerData.blocks }, (_, i) => q.write(base + i * bs, new Uint8Array(bs).fill(fill(i)))));
  let bad = 0;
  await Promise.all(Array.from({ length: workerData.blocks }, async (_, i) => {
    const buf = new Uint8Array(bs);
    await q.readInto(base + i * bs, buf);
    if (buf.some((b) => b !== fill(i))) bad++;
  }));
  parentPort.postMessage({ bad, stats: q.stats() });
  parentPort.once('message', async () => {
    const err = await q.readInto(0, new Uint8Array(512)).then(() => null, (e) => e.code);
    parentPort.postMessage({ after: err });
  });
  await q.closed;
  parentPort.postMessage({ closed: await q.readInto(0, new Uint8Array(512)).then(() => null, (e) => e.code) });
})();
`;

interface Job {
  worker: Worker;
  port: import('node:worker_threads').MessagePort;
  next(): Promise<Record<string, unknown>>;
}

function startJob(index: number, blocks: number): Job {
  const { port1, port2 } = new MessageChannel();
  const worker = new Worker(JOB, { eval: true, workerData: { module: QUEUE_THREAD, port: port2, index, blocks }, transferList: [port2] });
  const inbox: Array<Record<string, unknown>> = [];
  const waiting: Array<(m: Record<string, unknown>) => void> = [];
  worker.on('message', (m: Record<string, unknown>) => {
    const w = waiting.shift();
    if (w !== undefined) w(m);
    else inbox.push(m);
  });
  return {
    worker,
    port: port1,
    next: () => new Promise((r) => (inbox.length > 0 ? r(inbox.shift()!) : waiting.push(r))),
  };
}

let host: SimHost | undefined;
let jobs: Job[] = [];
afterEach(async () => {
  await Promise.all(jobs.map((j) => j.worker.terminate()));
  jobs = [];
  await host?.close();
  host = undefined;
});

describe('a device with its queues in worker threads', () => {
  it('each thread does its I/O on its own ring with its own grants; the data is where a plain device reads it', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 8 << 20 });
    jobs = [startJob(0, 24), startJob(1, 24)];
    const sharesBefore = host.guest.grants.stats().shareCalls;
    const dev = await openThreadedDevice({ platform: host.guest, vdev: disk.vdev, threads: jobs.map((j) => j.port) });
    const info: BlockDeviceInfo = dev.info;
    expect(info.features.queues).toBe(2);
    const results = await Promise.all(jobs.map((j) => j.next()));
    // Not one grant of the device's thread per I/O: the rings, pools and bounce pages are the threads' own.
    expect(host.guest.grants.stats().shareCalls).toBe(sharesBefore);
    for (const r of results) {
      expect(r.bad).toBe(0);
      const s = r.stats as { requests: number; responses: number; writes: number; reads: number };
      expect(s.writes).toBe(24);
      expect(s.reads).toBe(24);
      expect(s.responses).toBe(s.requests);
    }
    const stats = await dev.stats();
    expect(stats.queues.map((q) => q.requests)).toEqual(results.map((r) => (r.stats as { requests: number }).requests));
    expect(stats.requests).toBe(stats.queues[0]!.requests + stats.queues[1]!.requests);
    // What the backend's two queue threads served is what each of ours sent.
    expect(disk.stats().requests).toBe(stats.requests);
    await dev.close();
    expect((await Promise.all(jobs.map((j) => j.next()))).map((m) => m.closed)).toEqual(['BLKIF_CLOSED', 'BLKIF_CLOSED']);
    // Every grant the threads made is ended, and their shares are back: a plain device opens and reads their data.
    const plain = await openBlockDevice({ platform: host.guest, vdev: disk.vdev });
    for (const index of [0, 1]) {
      const at = index * 24 * 65536 + 5 * 65536;
      expectBytes(await plain.read(at, 4096), new Uint8Array(4096).fill((index * 31 + 5 * 7 + 1) & 0xff));
    }
    await plain.close();
  });

  it('more threads than the backend offers queues: BLKIF_EINVAL, and the vbd is left ready for the next open', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 4 << 20, maxQueues: 2 });
    jobs = [startJob(0, 1), startJob(1, 1), startJob(2, 1)];
    await expect(openThreadedDevice({ platform: host.guest, vdev: disk.vdev, threads: jobs.map((j) => j.port) })).rejects.toMatchObject({
      code: 'BLKIF_EINVAL',
      message: expect.stringContaining('offers 2 queues, and 3 threads') as unknown,
    });
    expect((await Promise.all(jobs.map((j) => j.next()))).map((m) => m.attachFailed)).toEqual([
      'BLKIF_CLOSED',
      'BLKIF_CLOSED',
      'BLKIF_CLOSED',
    ]);
    const plain = await openBlockDevice({ platform: host.guest, vdev: disk.vdev });
    await plain.write(0, pattern(0, 4096, 3));
    expectBytes(await plain.read(0, 4096), pattern(0, 4096, 3));
    await plain.close();
  });

  it('a vbd another opener holds: BLKIF_EBUSY, and the threads are told (their attach rejects) rather than left waiting', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 4 << 20 });
    const holder = await openBlockDevice({ platform: host.guest, vdev: disk.vdev });
    jobs = [startJob(0, 1), startJob(1, 1)];
    await expect(openThreadedDevice({ platform: host.guest, vdev: disk.vdev, threads: jobs.map((j) => j.port) })).rejects.toMatchObject({
      code: 'BLKIF_EBUSY',
    });
    expect((await Promise.all(jobs.map((j) => j.next()))).map((m) => m.attachFailed)).toEqual(['BLKIF_CLOSED', 'BLKIF_CLOSED']);
    // And a vbd that does not exist, before anything is shared.
    const more = [startJob(0, 1)];
    jobs.push(...more);
    await expect(openThreadedDevice({ platform: host.guest, vdev: 99999, threads: more.map((j) => j.port) })).rejects.toMatchObject({
      code: 'BLKIF_ENODEV',
    });
    expect((await more[0]!.next()).attachFailed).toBe('BLKIF_CLOSED');
    await holder.close();
  });

  it('a backend that closes ends the device: every thread fails with BLKIF_ENODEV, and gone is emitted', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 4 << 20 });
    jobs = [startJob(0, 4), startJob(1, 4)];
    const dev = await openThreadedDevice({ platform: host.guest, vdev: disk.vdev, threads: jobs.map((j) => j.port) });
    await Promise.all(jobs.map((j) => j.next()));
    const gone = new Promise<Error>((r) => dev.once('gone', r));
    void disk.detach(2000);
    expect(await gone).toMatchObject({ code: 'BLKIF_ENODEV' });
    for (const j of jobs) j.worker.postMessage('again');
    expect((await Promise.all(jobs.map((j) => j.next()))).map((m) => m.after)).toEqual(['BLKIF_ENODEV', 'BLKIF_ENODEV']);
    await dev.close();
  });

  it('refuses a platform that cannot share with threads, and an empty list of threads', async () => {
    host = await createSimHost();
    const disk = await host.addDisk({ size: 1 << 20 });
    await expect(openThreadedDevice({ platform: host.guest, vdev: disk.vdev, threads: [] })).rejects.toMatchObject({
      code: 'BLKIF_EINVAL',
    });
    const { threadShare: _, ...noThreads } = host.guest;
    void _;
    const { port1 } = new MessageChannel();
    await expect(
      openThreadedDevice({
        platform: { ...noThreads, domid: host.guest.domid, evtchn: host.guest.evtchn, restores: 0 },
        vdev: disk.vdev,
        threads: [port1],
      }),
    ).rejects.toMatchObject({ code: 'BLKIF_EINVAL', message: expect.stringContaining('cannot share with threads') as unknown });
    port1.close();
  });

  it('the example (examples/threads.ts) runs: two threads, 8 MiB each on their own ring, nothing bad', () => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('../../dist/examples/threads.js', import.meta.url))], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('connected: 2 queues, one per thread');
    expect(r.stdout.match(/8 MiB written and read back on its own ring in \d+ requests, 0 bad/g)).toHaveLength(2);
  });
});
