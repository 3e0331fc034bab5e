/**
 * One queue of blkcheck's every-queue check, on a worker thread of its own:
 * it writes its own 4 MiB region in 64 KiB calls, 16 at a time, reads it
 * back, says what differed (if anything), and stays until the device's
 * thread releases the queue.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { QueueThread } from '../../blkfront/queue_thread.js';
import { differs, fill } from './pattern.js';

const { port, index } = workerData as { port: MessagePort; index: number };
const q = await QueueThread.attach(port).catch((err: unknown) => {
  // The device did not connect: the device's thread says why.
  parentPort!.postMessage({ bad: `no queue: ${err instanceof Error ? err.message : String(err)}`, requests: 0 });
  return null;
});
if (q !== null) await run(q);

async function run(q: QueueThread): Promise<void> {
  const base = (40 << 20) + index * (4 << 20);
  const bs = 65536;
  let bad: string | null = null;
  for (let i = 0; i < 64; i += 16) {
    await Promise.all(
      Array.from({ length: 16 }, (_, j) => q.write(base + (i + j) * bs, fill(new Uint8Array(bs), base + (i + j) * bs, 200 + index))),
    );
  }
  for (let i = 0; i < 64 && bad === null; i += 16) {
    await Promise.all(
      Array.from({ length: 16 }, async (_, j) => {
        const buf = new Uint8Array(bs);
        await q.readInto(base + (i + j) * bs, buf);
        bad ??= differs(buf, base + (i + j) * bs, 200 + index);
      }),
    );
  }
  parentPort!.postMessage({ bad, requests: q.stats().requests });
  await q.closed;
}
