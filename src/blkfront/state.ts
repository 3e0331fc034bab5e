/**
 * The device's lifecycle as one value: which state it is in and, where the
 * state has one, the error that put it there or the calls it holds. A
 * transition is one assignment, so a state and its failure can never
 * disagree.
 *
 *   connected ──backend closes──▶ reconnecting ──back──▶ connected
 *       │                              └──did not come back──▶ gone
 *       ├──backend broke the protocol──▶ broken
 *       └──close()──▶ closing ──drained──▶ closed   (from any state)
 */
import { BlkifError } from '../errors.js';
import type { IoOp } from './request.js';

/**
 * Where the submitter sends pieces: to the queues; held while the rings are
 * down (they go out after the replay); or failed with the error that ended
 * the device.
 */
export type Route =
  { readonly kind: 'send' } | { readonly kind: 'hold'; readonly held: IoOp[] } | { readonly kind: 'refuse'; readonly error: BlkifError };

export type DeviceState =
  | { readonly kind: 'connected' }
  /** The rings are down; new calls wait in `held` and go out after the replay. */
  | { readonly kind: 'reconnecting'; readonly held: IoOp[] }
  /** The backend broke the protocol: every call fails with `error`. */
  | { readonly kind: 'broken'; readonly error: BlkifError }
  /** The backend went away for good: every call fails with `error`. */
  | { readonly kind: 'gone'; readonly error: BlkifError }
  /** close() has begun: new calls fail with BLKIF_CLOSED while what is in flight drains; `from` is the state it left. */
  | { readonly kind: 'closing'; readonly from: DeviceState }
  | { readonly kind: 'closed' };

export const CONNECTED: DeviceState = { kind: 'connected' };
export const CLOSED: DeviceState = { kind: 'closed' };

/** The error a call made in `state` fails with, or null when calls are taken. */
export function refusal(state: DeviceState, vdev: number): BlkifError | null {
  switch (state.kind) {
    case 'connected':
    case 'reconnecting':
      return null;
    case 'broken':
    case 'gone':
      return state.error;
    case 'closing':
    case 'closed':
      return new BlkifError('BLKIF_CLOSED', `block device ${vdev} is closed`);
  }
}

/**
 * Where pieces go in `state`: to the queues, held for the replay, or failed
 * with the state's error. Null while closing: what is in flight drains (or
 * stays held) where it is, and new calls are refused before they get here.
 */
export function routeFor(state: DeviceState, vdev: number): Route | null {
  switch (state.kind) {
    case 'connected':
      return { kind: 'send' };
    case 'reconnecting':
      return { kind: 'hold', held: state.held };
    case 'broken':
    case 'gone':
      return { kind: 'refuse', error: state.error };
    case 'closed':
      return { kind: 'refuse', error: refusal(state, vdev)! };
    case 'closing':
      return null;
  }
}
