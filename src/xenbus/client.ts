/**
 * The xenstore client: many requests in flight on one connection.
 *
 * - Each request gets a unique req_id; one reader matches replies to
 *   requests by req_id, in whatever order they come.
 * - Requests are queued and handed to the transport in order, at the end of
 *   the tick (so a byte transport writes them together); a transport that is
 *   full takes the rest when it says it can.
 * - A request can be aborted or time out. If it was still queued it is never
 *   sent; if it was sent, its req_id stays reserved until the late reply
 *   arrives and is discarded, so that reply can never be taken for another
 *   request's.
 * - Watch events are delivered through dispatch groups (see dispatch.ts).
 * - A broken stream (oversized frame, unknown message type) fails the
 *   connection: every pending request is rejected with XS_EPROTO. A reply for
 *   a req_id nobody waits for is dropped and counted.
 */
import { XenstoreError, isXenError } from '../errors.js';
import {
  XENSTORE_PAYLOAD_MAX,
  XS_HEADER_SIZE,
  XsType,
  isKnownXsType,
  joinPayload,
  payloadString,
  splitPayload,
  xsTypeName,
  type XsMessage,
} from '../wire/xs_wire.js';
import { Fifo } from '../util/fifo.js';
import { DispatchGroups } from './dispatch.js';
import { XsOps, expectOk, type RequestOptions } from './ops.js';
import type { ByteStream } from '../transport/byte_stream.js';
import { isMessageStream, type MessageStream } from '../transport/message_stream.js';
import { FramedStream } from '../transport/framed.js';
import type { TransactionOptions, WatchCallback, WatchOptions, XenstoreClientOptions, XenstoreClientStats } from './types.js';

export type { TransactionOptions, WatchCallback, WatchEvent, WatchOptions, XenstoreClientOptions, XenstoreClientStats } from './types.js';
import { Transaction, runTransaction } from './transaction.js';
import { Watch, WatchIterator, WatchTable } from './watch.js';

interface Pending {
  id: number;
  type: number;
  txId: number;
  path: string | undefined;
  /** The payload while queued; null once handed to the transport (or dropped, aborted while queued). */
  payload: Uint8Array | null;
  /** Settled (resolved, rejected, aborted, timed out): any reply is now discarded. */
  settled: boolean;
  /** Undoes what a successful reply set up, if it arrives after the caller gave up. */
  undo: ((reply: XsMessage) => void) | undefined;
  resolve(payload: Uint8Array): void;
  reject(err: Error): void;
  cleanup(): void;
}

/** Requests given up on after sending whose ids stay reserved, at most (see abandon()). */
export const MAX_ABANDONED = 4096;

let clientSerial = 0;

/**
 * A xenstore connection over any transport: a {@link ByteStream} (framed
 * here) or a {@link MessageStream}. All the operations of
 * {@link XsOps} (read, write, mkdir, rm, directory, permissions) run with
 * tx_id 0; {@link XenstoreClient.transaction} gives a transaction handle.
 */
export class XenstoreClient extends XsOps {
  private readonly stream: MessageStream;
  private readonly pending = new Map<number, Pending>();
  /** Ids of requests given up on after they were sent, oldest first, with what a late reply must undo. */
  private readonly abandoned = new Map<number, { type: number; undo: Pending['undo'] }>();
  /** Requests not yet handed to the transport, in order. */
  private readonly writeQueue = new Fifo<Pending>();
  private flushScheduled = false;
  private nextReqId = 1;
  private readonly watches: WatchTable;
  private failure: XenstoreError | null = null;
  private readonly closedPromise: Promise<XenstoreError>;
  private resolveClosed!: (err: XenstoreError) => void;
  private readonly closeListeners = new Set<(err: XenstoreError) => void>();
  private readonly counters: Omit<XenstoreClientStats, 'inFlight' | 'abandoned'> = {
    requestsSent: 0,
    repliesMatched: 0,
    maxInFlight: 0,
    unknownReplies: 0,
    lateReplies: 0,
    forgottenRequests: 0,
    watchEvents: 0,
    unmatchedWatchEvents: 0,
    bytesWritten: 0,
    bytesRead: 0,
  };

  constructor(
    transport: ByteStream | MessageStream,
    private readonly options: XenstoreClientOptions = {},
  ) {
    super();
    this.stream = isMessageStream(transport) ? transport : new FramedStream(transport);
    this.closedPromise = new Promise((r) => (this.resolveClosed = r));
    const onCallbackError =
      options.onCallbackError ??
      ((err: unknown, group: string) => {
        process.emitWarning(
          `xenstore watch callback in group "${group}" failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`,
        );
      });
    this.watches = new WatchTable(`xb${++clientSerial}-`, new DispatchGroups(onCallbackError));
    this.stream.start({
      message: (m) => this.onMessage(m),
      writable: () => this.flush(),
      // A transport that knows what went wrong (XS_EIO from a broken ring) says so; anything else is XS_CLOSED.
      closed: (err) =>
        this.fail(
          err instanceof XenstoreError && err.code !== 'XS_CLOSED'
            ? err
            : new XenstoreError('XS_CLOSED', `xenstore connection closed${err ? `: ${err.message}` : ''}`, { cause: err }),
        ),
    });
  }

  /** Resolves with the error that ended the connection (XS_CLOSED, XS_EPROTO…). */
  get closed(): Promise<XenstoreError> {
    return this.closedPromise;
  }

  /**
   * @internal Calls `listener` once when the connection ends (at once if it
   * has). Returns the function that removes it: unlike a handler on
   * {@link closed}, a waiter that finishes first leaves nothing behind.
   */
  onClose(listener: (err: XenstoreError) => void): () => void {
    if (this.failure) {
      const err = this.failure;
      queueMicrotask(() => listener(err));
      return () => undefined;
    }
    this.closeListeners.add(listener);
    return () => void this.closeListeners.delete(listener);
  }

  /** True once the connection has ended. */
  get isClosed(): boolean {
    return this.failure !== null;
  }

  stats(): XenstoreClientStats {
    return { ...this.counters, inFlight: this.pending.size, abandoned: this.abandoned.size };
  }

  /** Callbacks waiting per dispatch group. */
  watchBacklog(): Record<string, number> {
    return this.watches.backlog();
  }

  /** Closes the connection; pending requests reject with XS_CLOSED. */
  close(): void {
    this.fail(new XenstoreError('XS_CLOSED', 'xenstore connection closed by the client'));
  }

  protected override call(type: number, payload: Uint8Array, path: string | undefined, opts?: RequestOptions): Promise<Uint8Array> {
    return this.request(type, 0, payload, path, opts);
  }

  /**
   * Sends one request and resolves with the reply payload. An ERROR reply
   * rejects with the matching XS_* code. Exposed for the transaction handle
   * and for message types the helpers do not cover.
   */
  request(type: number, txId: number, payload: Uint8Array, path?: string, opts?: RequestOptions): Promise<Uint8Array> {
    return this.send(type, txId, payload, path, opts, undefined);
  }

  private send(
    type: number,
    txId: number,
    payload: Uint8Array,
    path: string | undefined,
    opts: RequestOptions | undefined,
    undo: Pending['undo'],
  ): Promise<Uint8Array> {
    if (this.failure) return Promise.reject(this.failure);
    const signal = opts?.signal;
    if (signal?.aborted) return Promise.reject(abortError(type, path, signal));
    const limit = this.stream.maxPayload ?? XENSTORE_PAYLOAD_MAX;
    if (payload.length > limit) {
      const why = limit < XENSTORE_PAYLOAD_MAX ? 'does not fit this transport' : 'exceeds XENSTORE_PAYLOAD_MAX';
      return Promise.reject(
        new XenstoreError(
          'XS_E2BIG',
          `xenstore ${xsTypeName(type)}${path ? ` ${path}` : ''}: ` + `a ${payload.length}-byte payload ${why} (at most ${limit})`,
          { path },
        ),
      );
    }
    const id = this.allocReqId();
    return new Promise<Uint8Array>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      const p: Pending = {
        id,
        type,
        txId,
        path,
        payload,
        settled: false,
        undo,
        resolve: (v) => {
          p.cleanup();
          resolve(v);
        },
        reject: (e) => {
          p.cleanup();
          reject(e);
        },
        cleanup: () => {
          p.settled = true;
          if (timer) clearTimeout(timer);
          if (onAbort) signal!.removeEventListener('abort', onAbort);
        },
      };
      const timeoutMs = opts?.timeoutMs ?? this.options.defaultTimeoutMs;
      if (timeoutMs !== undefined) {
        timer = setTimeout(
          () =>
            this.abandon(
              p,
              new XenstoreError('XS_TIMEOUT', `xenstore ${xsTypeName(type)}${path ? ` ${path}` : ''}: no reply after ${timeoutMs} ms`, {
                path,
              }),
            ),
          timeoutMs,
        );
      }
      if (signal) {
        onAbort = () => this.abandon(p, abortError(type, path, signal));
        signal.addEventListener('abort', onAbort, { once: true });
      }
      this.pending.set(id, p);
      if (this.pending.size > this.counters.maxInFlight) this.counters.maxInFlight = this.pending.size;
      this.writeQueue.push(p);
      this.scheduleFlush();
    });
  }

  /**
   * Runs `fn` inside a transaction and commits it. On EAGAIN (a conflicting
   * change, at commit or during `fn`), or ENOENT at commit (the transaction
   * was lost to a save/restore of this domain), the whole of `fn` runs again,
   * after a short randomised backoff, up to `maxAttempts` times. If `fn`
   * throws, the transaction is aborted and the error passed on.
   */
  transaction<T>(fn: (tx: Transaction) => Promise<T>, opts: TransactionOptions = {}): Promise<T> {
    return runTransaction((o) => this.startTransaction(o), fn, opts);
  }

  /** Starts a transaction by hand; prefer {@link transaction}, which retries. */
  async startTransaction(opts?: RequestOptions): Promise<Transaction> {
    const endLate = (m: XsMessage): void => {
      const id = Number(payloadString(m.payload));
      if (Number.isInteger(id) && id > 0) this.request(XsType.TransactionEnd, id, joinPayload(['F'])).catch(() => undefined);
    };
    const reply = await this.send(XsType.TransactionStart, 0, joinPayload(['']), undefined, opts, endLate);
    const s = payloadString(reply);
    if (!/^\d+$/.test(s) || Number(s) === 0 || Number(s) > 0xffffffff) {
      throw new XenstoreError('XS_EPROTO', `xenstore TRANSACTION_START: bad transaction id "${s}"`);
    }
    return new Transaction(this, Number(s));
  }

  /**
   * Sets a watch. The callback runs in the watch's dispatch group, first for
   * the event xenstored sends on registration, then on every change at or
   * below `path` (events may also be spurious: re-read, don't assume).
   */
  async watch(path: string, callback: WatchCallback, opts: WatchOptions = {}): Promise<Watch> {
    // Registered before the request goes out: the first event may follow the reply at once.
    const token = this.watches.add(path, opts.group, callback);
    try {
      const unwatchLate = (): void => void this.request(XsType.Unwatch, 0, joinPayload([path, token])).catch(() => undefined);
      expectOk(await this.send(XsType.Watch, 0, joinPayload([path, token]), path, opts, unwatchLate), `WATCH ${path}`);
    } catch (err) {
      this.watches.delete(token);
      throw err;
    }
    return new Watch(this, path, token);
  }

  /**
   * The watch as an async iterator. Events queue until read; identical paths
   * already queued are merged, since an event only says "look again".
   * Breaking out of the loop (or `return()`) removes the watch.
   */
  watchEvents(path: string, opts: RequestOptions = {}): WatchIterator {
    return new WatchIterator(this, path, opts);
  }

  /** @internal Removes a watch by token. */
  async unwatchToken(path: string, token: string, opts?: RequestOptions): Promise<void> {
    if (!this.watches.delete(token)) return;
    if (this.failure) return;
    try {
      await this.request(XsType.Unwatch, 0, joinPayload([path, token]), path, opts);
    } catch (err) {
      if (!isXenError(err, 'XS_ENOENT') && !isXenError(err, 'XS_CLOSED')) throw err;
    }
  }

  // --- request ids and the write side ---------------------------------------

  private allocReqId(): number {
    // 0 is what watch events carry; the transport may keep some ids for itself.
    const reserved = this.stream.reservedReqIds;
    for (;;) {
      const id = this.nextReqId;
      this.nextReqId = id >= 0xffffffff ? 1 : id + 1;
      if (!this.pending.has(id) && !this.abandoned.has(id) && reserved?.has(id) !== true) return id;
    }
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    // A microtask lets every request made in the same tick share one write.
    queueMicrotask(() => {
      this.flushScheduled = false;
      this.flush();
    });
  }

  /** Hands queued requests to the transport, in order, while it takes them. */
  private flush(): void {
    for (let p = this.writeQueue.peek(); p !== undefined && !this.failure; p = this.writeQueue.peek()) {
      if (p.payload !== null) {
        if (!this.stream.send({ type: p.type, reqId: p.id, txId: p.txId, payload: p.payload })) return; // resumed on writable()
        this.counters.requestsSent++;
        this.counters.bytesWritten += XS_HEADER_SIZE + p.payload.length;
        p.payload = null;
      }
      this.writeQueue.shift();
    }
  }

  /**
   * Aborted or timed out: reject now. A request never sent frees its id; one
   * that is out keeps its id reserved (as a small record, not the request)
   * until its late reply arrives, so that reply cannot be taken for another
   * request's. At most MAX_ABANDONED are kept: past that the oldest is
   * forgotten, and should its reply ever come it is dropped as unknown. Ids
   * are handed out in order over 2^32 values, so a forgotten id is not used
   * again for billions of requests.
   */
  private abandon(p: Pending, err: XenstoreError): void {
    if (p.settled) return;
    this.pending.delete(p.id);
    if (p.payload !== null)
      p.payload = null; // never sent: the id is free again
    else {
      if (this.abandoned.size >= MAX_ABANDONED) {
        const oldest = this.abandoned.keys().next().value as number;
        this.abandoned.delete(oldest);
        this.counters.forgottenRequests++;
      }
      this.abandoned.set(p.id, { type: p.type, undo: p.undo });
    }
    p.reject(err);
  }

  // --- the read side ----------------------------------------------------------

  private onMessage(m: XsMessage): void {
    if (this.failure) return;
    this.counters.bytesRead += XS_HEADER_SIZE + m.payload.length;
    if (!isKnownXsType(m.type)) {
      // Either the daemon speaks a newer protocol or the stream lost sync; both are fatal here.
      this.fail(new XenstoreError('XS_EPROTO', `xenstore stream is broken: unknown message type ${m.type} (len ${m.len})`));
      return;
    }
    if (m.type === XsType.WatchEvent) {
      this.onWatchEvent(m.payload);
      return;
    }
    const p = this.pending.get(m.reqId);
    if (!p) {
      const late = this.abandoned.get(m.reqId);
      if (late === undefined) this.counters.unknownReplies++;
      else {
        this.abandoned.delete(m.reqId);
        this.counters.lateReplies++;
        if (late.undo && m.type === late.type) late.undo(m);
      }
      return;
    }
    this.pending.delete(m.reqId);
    this.counters.repliesMatched++;
    if (m.type === XsType.Error) {
      p.reject(XenstoreError.fromErrno(payloadString(m.payload), xsTypeName(p.type), p.path));
    } else if (m.type !== p.type) {
      p.reject(new XenstoreError('XS_EPROTO', `xenstore ${xsTypeName(p.type)}: reply has type ${xsTypeName(m.type)}`, { path: p.path }));
    } else {
      p.resolve(m.payload);
    }
  }

  private onWatchEvent(payload: Uint8Array): void {
    const [path, token] = splitPayload(payload);
    if (this.watches.deliver(path, token)) this.counters.watchEvents++;
    else this.counters.unmatchedWatchEvents++;
  }

  private fail(err: XenstoreError): void {
    if (this.failure) return;
    this.failure = err;
    for (const p of this.pending.values()) {
      if (!p.settled) p.reject(err);
    }
    this.pending.clear();
    this.abandoned.clear();
    this.writeQueue.clear();
    this.watches.clear();
    this.stream.close();
    this.resolveClosed(err);
    const listeners = [...this.closeListeners];
    this.closeListeners.clear();
    for (const l of listeners) l(err);
  }
}

function abortError(type: number, path: string | undefined, signal: AbortSignal): XenstoreError {
  return new XenstoreError('XS_ABORTED', `xenstore ${xsTypeName(type)}${path ? ` ${path}` : ''}: aborted`, { path, cause: signal.reason });
}
