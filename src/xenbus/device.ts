/**
 * Xenbus device helpers: the `state` handshake both ends of a split device
 * run through xenstore (xen/io/xenbus.h).
 */
import { XenstoreError } from '../errors.js';
import { XenbusState, parseXenbusState, xenbusStateName } from '../wire/xenbus_state.js';
import type { XenstoreClient } from './client.js';
import type { RequestOptions, XsOps } from './ops.js';

/** Publishes our own state in `<dir>/state`. */
export async function switchState(xs: XsOps, dir: string, state: XenbusState, opts?: RequestOptions): Promise<void> {
  await xs.write(`${dir}/state`, String(state), opts);
}

/**
 * Reads `<dir>/state`. An absent key reads as Unknown (as Linux's
 * xenbus_read_driver_state does); a value that is not a state is XS_EINVAL.
 */
export async function readState(xs: XsOps, dir: string, opts?: RequestOptions): Promise<XenbusState> {
  const v = await xs.readOptional(`${dir}/state`, opts);
  if (v === undefined) return XenbusState.Unknown;
  const s = parseXenbusState(v);
  if (s === undefined) throw new XenstoreError('XS_EINVAL', `xenbus ${dir}/state: "${v}" is not a xenbus state`, { path: `${dir}/state` });
  return s;
}

export interface WaitForStateOptions extends RequestOptions {
  /** Dispatch group for the watch (default: one named after `dir`). */
  group?: string;
}

/**
 * Waits until the other end's state satisfies `want` (a state, a list of
 * states, or a predicate) and returns that state. Watch based: it re-reads
 * `<dir>/state` on every event, including the one sent on registration, so a
 * state reached before the call is seen too.
 */
export async function waitForState(
  client: XenstoreClient,
  dir: string,
  want: XenbusState | readonly XenbusState[] | ((s: XenbusState) => boolean),
  opts: WaitForStateOptions = {},
): Promise<XenbusState> {
  const accept =
    typeof want === 'function' ? want : Array.isArray(want) ? (s: XenbusState) => want.includes(s) : (s: XenbusState) => s === want;
  const describe =
    typeof want === 'function'
      ? 'the wanted state'
      : ([] as XenbusState[])
          .concat(want as XenbusState)
          .map(xenbusStateName)
          .join(' or ');
  const aborted = (cause?: unknown): XenstoreError =>
    new XenstoreError('XS_ABORTED', `waiting for ${dir} to reach ${describe}: aborted`, { path: dir, cause });
  const controller = new AbortController();
  const { signal, timeoutMs } = opts;
  const onAbort = (): void => controller.abort(signal?.reason);
  signal?.addEventListener('abort', onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  let stopListening = (): void => undefined;
  try {
    return await new Promise<XenbusState>((resolve, reject) => {
      if (signal?.aborted) return reject(aborted(signal.reason));
      controller.signal.addEventListener('abort', () => reject(aborted(controller.signal.reason)), { once: true });
      if (timeoutMs !== undefined) {
        timer = setTimeout(
          () => reject(new XenstoreError('XS_TIMEOUT', `${dir} did not reach ${describe} within ${timeoutMs} ms`, { path: dir })),
          timeoutMs,
        );
      }
      stopListening = client.onClose(reject);
      client
        .watch(
          `${dir}/state`,
          async () => {
            try {
              const s = await readState(client, dir, { signal: controller.signal });
              if (accept(s)) resolve(s);
            } catch (err) {
              reject(err);
            }
          },
          { group: opts.group ?? `state:${dir}`, signal: controller.signal },
        )
        .then((w) => controller.signal.addEventListener('abort', () => void w.unwatch().catch(() => undefined), { once: true }), reject);
    });
  } finally {
    if (timer) clearTimeout(timer);
    stopListening();
    signal?.removeEventListener('abort', onAbort);
    controller.abort(); // removes the watch and stops pending reads
  }
}
