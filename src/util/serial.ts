/**
 * Runs asynchronous tasks one at a time, in the order they were given, each
 * awaited before the next starts. Used wherever steps must not interleave:
 * a watch group's callbacks, a device's reactions to its backend's state.
 */
import { Fifo } from './fifo.js';

export type Task<T = unknown> = () => T | Promise<T>;

export class SerialQueue {
  private readonly tasks = new Fifo<Task>();
  private running = false;
  private idleWaiters: Array<() => void> = [];

  /**
   * @param onError where a task pushed with {@link push} reports a failure
   *   (a task given to {@link run} reports to its caller instead).
   * @param onIdle called each time the queue runs dry.
   */
  constructor(
    private readonly onError: (err: unknown) => void,
    private readonly onIdle: () => void = () => undefined,
  ) {}

  /** Tasks waiting, not counting the one running. */
  get pending(): number {
    return this.tasks.length;
  }

  get busy(): boolean {
    return this.running;
  }

  /** Queues a task; a failure goes to `onError`. */
  push(task: Task): void {
    this.tasks.push(task);
    if (!this.running) void this.drain();
  }

  /** Queues a task and settles as it does (its failure is the caller's, not `onError`'s). */
  run<T>(task: Task<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.push(async () => {
        try {
          resolve(await task());
        } catch (err) {
          reject(err);
        }
      });
    });
  }

  /** Resolves once every task queued so far (and any they queue) has finished. */
  idle(): Promise<void> {
    if (!this.running) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private async drain(): Promise<void> {
    this.running = true;
    for (let task = this.tasks.shift(); task !== undefined; task = this.tasks.shift()) {
      try {
        await task();
      } catch (err) {
        this.onError(err);
      }
    }
    this.running = false;
    const waiters = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of waiters) w();
    this.onIdle();
  }
}
