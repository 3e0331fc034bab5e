/**
 * One queue of a simulated blkback as a worker thread: started with what
 * it serves, ready once it has mapped the ring and bound the channel, and
 * stopped through the backend's shared control words.
 */
import { PlatformError } from '../../errors.js';
import { Worker } from 'node:worker_threads';
import type { QueueWorkerData } from './worker.js';

/** The worker's compiled entry point (under a TypeScript loader, the build's JS). */
function workerUrl(): URL {
  return import.meta.url.endsWith('.ts')
    ? new URL('../../../dist/src/sim/blkback/worker.js', import.meta.url)
    : new URL('./worker.js', import.meta.url);
}

export interface QueueWorker {
  worker: Worker;
  /** Settles when the thread has exited. */
  stopped: Promise<void>;
}

export interface StartedQueue {
  qw: QueueWorker;
  /** Resolves once the queue serves; rejects with why it could not. */
  ready: Promise<void>;
}

/** Starts a queue's thread; `broken` hears why it stopped trusting the frontend, if it does. */
export function startQueueWorker(data: QueueWorkerData, broken: (reason: string) => void): StartedQueue {
  const worker = new Worker(workerUrl(), { workerData: data });
  const ready = new Promise<void>((resolve, reject) => {
    worker.on('message', (m: { type: string; reason?: string; message?: string }) => {
      if (m.type === 'ready') resolve();
      else if (m.type === 'error') reject(new PlatformError('XEN_ESYS', `queue ${data.queue}: ${m.message}`));
      else if (m.type === 'broken') broken(m.reason ?? 'no reason given');
    });
    worker.once('error', reject);
  });
  const stopped = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
  return { qw: { worker, stopped }, ready };
}
