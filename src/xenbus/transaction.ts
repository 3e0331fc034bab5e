import { XenstoreError, isXenError } from '../errors.js';
import type { TransactionOptions, XsClientPort } from './types.js';
import { XsType, joinPayload } from '../wire/xs_wire.js';
import { XsOps, expectOk, type RequestOptions } from './ops.js';

/** A transaction: the same operations, run on a snapshot until {@link end}. */
export class Transaction extends XsOps {
  private ended = false;

  constructor(
    private readonly client: XsClientPort,
    readonly id: number,
  ) {
    super();
  }

  protected override call(type: number, payload: Uint8Array, path: string | undefined, opts?: RequestOptions): Promise<Uint8Array> {
    if (this.ended) return Promise.reject(new XenstoreError('XS_EINVAL', `xenstore transaction ${this.id} has ended`, { path }));
    return this.client.request(type, this.id, payload, path, opts);
  }

  /** Commits (`true`) or discards (`false`). A commit that conflicted fails with XS_EAGAIN. */
  async end(commit: boolean, opts?: RequestOptions): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    expectOk(
      await this.client.request(XsType.TransactionEnd, this.id, joinPayload([commit ? 'T' : 'F']), undefined, opts),
      'TRANSACTION_END',
    );
  }
}

/** Waits about `ms` (0.5–1.5×, so conflicting retries spread out); rejects with XS_ABORTED on abort. */
export function backoff(ms: number, signal?: AbortSignal): Promise<void> {
  const wait = ms * (0.5 + Math.random());
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new XenstoreError('XS_ABORTED', 'xenstore transaction: aborted', { cause: signal.reason }));
    const t = setTimeout(resolve, wait);
    signal?.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        reject(new XenstoreError('XS_ABORTED', 'xenstore transaction: aborted', { cause: signal.reason }));
      },
      { once: true },
    );
  });
}

/**
 * Runs `fn` inside a transaction and commits it; on EAGAIN (a conflicting
 * change, at commit or during `fn`) the whole of `fn` runs again after a
 * short randomised backoff, up to `maxAttempts` times. If `fn` throws, the
 * transaction is aborted and the error passed on.
 */
export async function runTransaction<T>(
  start: (opts: RequestOptions) => Promise<Transaction>,
  fn: (tx: Transaction) => Promise<T>,
  opts: TransactionOptions,
): Promise<T> {
  const maxAttempts = opts.maxAttempts ?? 16;
  let delay = opts.backoffMs ?? 1;
  for (let attempt = 1; ; attempt++) {
    const tx = await start({ signal: opts.signal });
    let committing = false;
    try {
      const result = await fn(tx);
      committing = true;
      await tx.end(true, { signal: opts.signal });
      return result;
    } catch (err) {
      await tx.end(false).catch(() => undefined); // a no-op when the failure was the commit itself
      // EAGAIN: a conflicting change. ENOENT at commit: the transaction itself is gone (the
      // domain was saved and restored meanwhile, and xenstored forgot it): both mean run it again.
      const again = isXenError(err, 'XS_EAGAIN') || (committing && isXenError(err, 'XS_ENOENT'));
      if (!again || attempt >= maxAttempts) throw err;
    }
    await backoff(delay, opts.signal);
    delay = Math.min(delay * 2, 100);
  }
}
