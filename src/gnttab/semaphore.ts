/**
 * An async counting semaphore, strictly FIFO: a waiter is served only after
 * every waiter ahead of it, and nobody jumps the queue while it waits (no
 * barging), so a request for many units is not starved by a stream of small
 * ones.
 */
import { PlatformError } from '../errors.js';

interface Waiter {
  n: number;
  resolve(): void;
  reject(err: unknown): void;
  signal: AbortSignal | undefined;
  onAbort: (() => void) | undefined;
}

export class Semaphore {
  private count: number;
  private readonly queue: Waiter[] = [];
  private failure: Error | null = null;

  constructor(count: number) {
    if (!Number.isInteger(count) || count < 0) throw new PlatformError('XEN_EINVAL', `bad semaphore count ${count}`);
    this.count = count;
  }

  /** Units free now. */
  get available(): number {
    return this.count;
  }

  /** Waiters queued. */
  get waiting(): number {
    return this.queue.length;
  }

  /** Takes up to `n` units without waiting; none while others wait. Returns how many were taken. */
  tryAcquireUpTo(n: number): number {
    if (this.failure !== null || this.queue.length > 0) return 0;
    const k = Math.min(n, this.count);
    this.count -= k;
    return k;
  }

  /** Takes `n` units, waiting in FIFO order. Rejects if the signal aborts or the semaphore is closed. */
  acquire(n: number, signal?: AbortSignal): Promise<void> {
    if (this.failure !== null) return Promise.reject(this.failure);
    if (this.queue.length === 0 && this.count >= n) {
      this.count -= n;
      return Promise.resolve();
    }
    if (signal?.aborted) return Promise.reject(signal.reason as Error);
    return new Promise((resolve, reject) => {
      const w: Waiter = { n, resolve, reject, signal, onAbort: undefined };
      if (signal !== undefined) {
        w.onAbort = () => {
          const i = this.queue.indexOf(w);
          if (i >= 0) this.queue.splice(i, 1);
          reject(signal.reason as Error);
          // The head may have been what held the others back.
          this.serve();
        };
        signal.addEventListener('abort', w.onAbort, { once: true });
      }
      this.queue.push(w);
    });
  }

  release(n: number): void {
    this.count += n;
    this.serve();
  }

  /** Rejects every waiter and every later acquire with `err`. */
  close(err: Error): void {
    this.failure = err;
    for (const w of this.queue.splice(0)) {
      if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
      w.reject(err);
    }
  }

  private serve(): void {
    while (this.queue.length > 0 && this.queue[0]!.n <= this.count) {
      const w = this.queue.shift()!;
      this.count -= w.n;
      if (w.onAbort) w.signal?.removeEventListener('abort', w.onAbort);
      w.resolve();
    }
  }
}
