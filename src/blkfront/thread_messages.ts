/**
 * What the device's thread (threaded.ts) and a queue thread
 * (queue_thread.ts) say to each other: plain data over a MessagePort. The
 * device's thread asks one thing at a time of each queue thread and waits
 * for the reply with the same id; a queue thread tells of a broken backend
 * unasked.
 */
import type { ThreadPlatformSpec } from '../platform/types.js';
import type { PoolPlan } from './budget.js';
import type { BlockDeviceInfo } from './types.js';
import type { BlockDeviceStats } from './options.js';

export type ThreadRequest = { id: number } & (
  | { t: 'ring'; spec: ThreadPlatformSpec; backendId: number; pages: number }
  | { t: 'drop' }
  | {
      t: 'connect';
      queue: number;
      info: BlockDeviceInfo;
      plan: PoolPlan;
      /** This queue's share of the guest's grant limit (every thread's pool together stays within it). */
      budget: { pool: number; fresh: number };
      backendId: number;
      handle: number;
      pollMicros: number;
    }
  | { t: 'fail'; code: string; message: string }
  | { t: 'stats' }
  | { t: 'quiesce'; timeoutMs: number }
  | { t: 'release' }
);

export type ThreadReply = { id: number } & ({ ok: true; value: unknown } | { ok: false; code: string | null; message: string });

/** Unasked: the backend broke the protocol on this thread's queue. */
export interface ThreadEvent {
  event: 'broken';
  code: string;
  message: string;
}

/** One queue thread's counters: a device's, less what only a device (not one of its queues) counts. */
export type QueueThreadStats = Omit<BlockDeviceStats, 'responsesPerInterrupt' | 'bufferPages' | 'reconnects' | 'resumes' | 'replayed'>;
