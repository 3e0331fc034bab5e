/**
 * Watch handles: the registered watch, and the same as an async iterator.
 * Delivery itself (tokens, dispatch groups) lives in the client.
 */
import { asError } from '../errors.js';
import type { RequestOptions } from './ops.js';
import type { WatchCallback, WatchEvent, XsClientPort } from './types.js';
import type { DispatchGroups } from './dispatch.js';

/** A registered watch. */
export class Watch {
  constructor(
    private readonly client: XsClientPort,
    readonly path: string,
    readonly token: string,
  ) {}

  /** Removes the watch; callbacks not yet run for it are skipped. */
  unwatch(opts?: RequestOptions): Promise<void> {
    return this.client.unwatchToken(this.path, this.token, opts);
  }
}

/** A watch read with `for await` (what `XenstoreClient.watchEvents` returns). */
export class WatchIterator implements AsyncIterableIterator<WatchEvent> {
  /** Resolves once the watch is registered (rejects if it could not be). */
  readonly ready: Promise<void>;
  private readonly queue: WatchEvent[] = [];
  private readonly queued = new Set<string>();
  private waiter: { resolve(r: IteratorResult<WatchEvent>): void; reject(e: unknown): void } | null = null;
  private watch: { unwatch(opts?: RequestOptions): Promise<void> } | null = null;
  private error: unknown = null;
  private done = false;
  private stopListening = (): void => undefined;

  constructor(client: XsClientPort, path: string, opts: RequestOptions) {
    this.ready = client
      .watch(path, (e) => this.push(e), { ...opts, group: `iterator:${path}` })
      .then(
        (w) => {
          this.watch = w;
          if (this.done) void w.unwatch().catch(() => undefined);
          this.stopListening = client.onClose((err) => this.finish(err));
        },
        (err) => this.finish(err),
      );
    this.ready.catch(() => undefined);
    opts.signal?.addEventListener('abort', () => void this.return(), { once: true });
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  next(): Promise<IteratorResult<WatchEvent>> {
    const e = this.queue.shift();
    if (e) {
      this.queued.delete(e.path);
      return Promise.resolve({ value: e, done: false });
    }
    if (this.error) return Promise.reject(asError(this.error));
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  async return(): Promise<IteratorResult<WatchEvent>> {
    this.finish(null);
    await this.watch?.unwatch().catch(() => undefined);
    return { value: undefined, done: true };
  }

  private push(e: WatchEvent): void {
    if (this.done) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w.resolve({ value: e, done: false });
      return;
    }
    if (this.queued.has(e.path)) return;
    this.queued.add(e.path);
    this.queue.push(e);
  }

  private finish(err: unknown): void {
    if (this.done) return;
    this.done = true;
    this.stopListening();
    if (err) this.error = err;
    const w = this.waiter;
    this.waiter = null;
    if (w) {
      if (this.error) w.reject(this.error);
      else w.resolve({ value: undefined, done: true });
    }
  }
}

interface WatchEntry {
  path: string;
  token: string;
  group: string;
  callback: WatchCallback;
}

/**
 * A client's watches by token, and delivery of their events: each callback
 * runs in its watch's dispatch group, so a stalled one holds up only its
 * own group.
 */
export class WatchTable {
  private readonly byToken = new Map<string, WatchEntry>();
  private next = 1;

  constructor(
    /** Unique to the client, so tokens never collide with another client's on the same connection. */
    private readonly prefix: string,
    private readonly groups: DispatchGroups,
  ) {}

  /** Registers a watch; returns its token. */
  add(path: string, group: string | undefined, callback: WatchCallback): string {
    const token = `${this.prefix}${this.next++}`;
    this.byToken.set(token, { path, token, group: group ?? 'default', callback });
    return token;
  }

  /** Forgets a watch; false when it was not there. */
  delete(token: string): boolean {
    return this.byToken.delete(token);
  }

  clear(): void {
    this.byToken.clear();
  }

  /** Queues the event for its watch's callback; false when no watch has that token. */
  deliver(path: string | undefined, token: string | undefined): boolean {
    const entry = token === undefined ? undefined : this.byToken.get(token);
    if (entry === undefined || path === undefined) return false;
    const event: WatchEvent = { path, token: entry.token };
    this.groups.run(entry.group, () => {
      // Unwatched while queued: the caller no longer wants it.
      if (this.byToken.get(entry.token) !== entry) return undefined;
      return entry.callback(event);
    });
    return true;
  }

  /** Callbacks waiting per dispatch group. */
  backlog(): Record<string, number> {
    return this.groups.backlog();
  }
}
