/**
 * The xenstore client's public types: its options, the options of a watch
 * and of a transaction, watch events, and its counters.
 */
import type { RequestOptions } from './ops.js';
import type { XenstoreError } from '../errors.js';

/** A watch event: the path that changed (relative if the watch was) and the watch's token. */
export interface WatchEvent {
  path: string;
  token: string;
}

export type WatchCallback = (event: WatchEvent) => unknown;

export interface WatchOptions extends RequestOptions {
  /**
   * Dispatch group for this watch's callbacks (default `"default"`). Name one
   * per device or domain so that a slow callback delays only its own group.
   */
  group?: string;
}

export interface XenstoreClientOptions {
  /** Timeout for requests that do not set their own (default: none). */
  defaultTimeoutMs?: number;
  /** Called when a watch callback throws or rejects. Default: a process warning. */
  onCallbackError?: (err: unknown, group: string) => void;
}

export interface TransactionOptions {
  signal?: AbortSignal;
  /** Attempts before giving up with XS_EAGAIN (default 16). */
  maxAttempts?: number;
  /** First backoff delay in ms, doubled per attempt with jitter, capped at 100 ms (default 1). */
  backoffMs?: number;
}

/** Counters for what the connection has seen. */
export interface XenstoreClientStats {
  requestsSent: number;
  repliesMatched: number;
  /** Requests waiting for a reply now (queued or sent). */
  inFlight: number;
  /** Most requests ever in flight at once. */
  maxInFlight: number;
  /** Replies whose req_id matched no request: dropped. */
  unknownReplies: number;
  /** Replies to requests that had been aborted or had timed out: discarded. */
  lateReplies: number;
  /** Requests given up on after sending whose ids are still reserved for their late replies (at most 4096). */
  abandoned: number;
  /** Such requests forgotten to keep that bound: a reply to one would count as unknown. */
  forgottenRequests: number;
  watchEvents: number;
  /** Watch events for a token with no watch (e.g. just unwatched): dropped. */
  unmatchedWatchEvents: number;
  bytesWritten: number;
  bytesRead: number;
}

/**
 * What a transaction and a watch need of the client that made them: one
 * request, a watch's removal, and word of the connection closing. (They
 * take this, not the client itself, so nothing imports back up.)
 */
export interface XsClientPort {
  request(type: number, txId: number, payload: Uint8Array, path?: string, opts?: RequestOptions): Promise<Uint8Array>;
  watch(path: string, callback: WatchCallback, opts?: WatchOptions): Promise<{ unwatch(opts?: RequestOptions): Promise<void> }>;
  unwatchToken(path: string, token: string, opts?: RequestOptions): Promise<void>;
  onClose(listener: (err: XenstoreError) => void): () => void;
}
