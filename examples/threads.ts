/**
 * A device whose queues run in worker threads: the main thread opens the
 * device (the handshake, the backend's state), each worker does its own
 * I/O on a queue of its own, with its own ring, event channel and grants,
 * and nothing crosses between threads per request. Here on the simulated
 * host; on a real guest, give openThreadedDevice `await openXenPlatform()`.
 *
 *   npm run build && node dist/examples/threads.js
 */
import { MessageChannel, Worker, isMainThread, parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { QueueThread, openThreadedDevice } from '../src/index.js';
import { createSimHost } from '../src/sim/index.js';

const THREADS = 2;
const BLOCK = 1 << 20;
const BLOCKS = 8;

/** A worker: 8 MiB of its own written in 1 MiB calls, read back and compared. */
async function worker(port: MessagePort, index: number): Promise<void> {
  const q = await QueueThread.attach(port);
  const base = index * BLOCKS * BLOCK;
  const data = new Uint8Array(BLOCK);
  for (let i = 0; i < BLOCKS; i++) await q.write(base + i * BLOCK, data.fill(index * BLOCKS + i + 1));
  let bad = 0;
  for (let i = 0; i < BLOCKS; i++) {
    await q.readInto(base + i * BLOCK, data);
    if (data.some((b) => b !== index * BLOCKS + i + 1)) bad++;
  }
  parentPort!.postMessage({ index, bad, requests: q.stats().requests });
  await q.closed;
}

async function main(): Promise<void> {
  const host = await createSimHost({ guestName: 'threads' });
  try {
    const disk = await host.addDisk({ size: 64 << 20 });
    const ports: MessagePort[] = [];
    const reports: Array<Promise<{ index: number; bad: number; requests: number }>> = [];
    for (let i = 0; i < THREADS; i++) {
      const { port1, port2 } = new MessageChannel();
      const w = new Worker(new URL(import.meta.url), { workerData: { port: port2, index: i }, transferList: [port2] });
      reports.push(new Promise((resolve, reject) => (w.once('message', resolve), w.once('error', reject))));
      ports.push(port1);
    }
    const dev = await openThreadedDevice({ platform: host.guest, vdev: disk.vdev, threads: ports });
    console.log(`connected: ${dev.info.features.queues} queues, one per thread`);
    let bad = 0;
    for (const r of await Promise.all(reports)) {
      console.log(`thread ${r.index}: ${BLOCKS} MiB written and read back on its own ring in ${r.requests} requests, ${r.bad} bad`);
      bad += r.bad;
    }
    await dev.close();
    if (bad > 0) process.exitCode = 1;
  } finally {
    await host.close();
  }
}

if (isMainThread) await main();
else await worker((workerData as { port: MessagePort }).port, (workerData as { index: number }).index);
