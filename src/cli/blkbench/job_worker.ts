/**
 * One --numjobs job as a worker thread: it serves its queue of the device
 * (QueueThread), runs the job on it, posts the result, and stays until the
 * device's thread has released the queue.
 */
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { QueueThread } from '../../blkfront/queue_thread.js';
import { runJob } from './run.js';
import { queueEngine, type JobMessage } from './jobs.js';
import type { BenchOptions } from './options.js';

const data = workerData as { port: MessagePort; zeroCopy: boolean };
const out = parentPort!;
const post = (m: JobMessage): void => out.postMessage(m);

try {
  const q = await QueueThread.attach(data.port);
  post({ kind: 'connected' });
  // The job's options (its seed, its slice) come once every job is connected, so they run together.
  const options = await new Promise<BenchOptions>((resolve) => out.once('message', resolve));
  try {
    const r = await runJob(queueEngine(q, data.zeroCopy), options);
    post({ kind: 'done', result: { ...r, lat: r.lat.snapshot() } });
  } catch (err) {
    post({ kind: 'failed', message: err instanceof Error ? err.message : String(err) });
  }
  await q.closed;
} catch (err) {
  post({ kind: 'failed', message: err instanceof Error ? err.message : String(err) });
}
