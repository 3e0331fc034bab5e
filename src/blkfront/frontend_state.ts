/**
 * The frontend's own xenbus state across a device's life: the reset before
 * connecting, the take-over of a vbd a killed process left engaged, and
 * the close handshake (Closing, then Closed once the backend follows).
 */
import { isXenError } from '../errors.js';
import { XenbusState, xenbusStateName } from '../wire/xenbus_state.js';
import { readState, switchState, waitForState } from '../xenbus/device.js';
import type { XenPlatform } from '../platform/types.js';
import type { DeviceLocation, TakeOver } from './types.js';

/**
 * Before (re)connecting: our state back to Initialising, after Closed when
 * we were connected, as blkfront does when it starts over.
 */
export async function resetFrontend(platform: XenPlatform, loc: DeviceLocation): Promise<void> {
  const xs = platform.xenstore;
  const s = await readState(xs, loc.frontend);
  if (s !== XenbusState.Initialising) await switchState(xs, loc.frontend, XenbusState.Initialising);
}

/** Frontend states a frontend leaves behind while it drives the vbd. */
const ENGAGED_STATES: readonly XenbusState[] = [
  XenbusState.Initialised,
  XenbusState.Connected,
  XenbusState.Closing,
  XenbusState.Reconfiguring,
  XenbusState.Reconfigured,
];

/**
 * Before the reset, with the vbd claimed: a frontend state that says a
 * frontend still drives the vbd was left by a process that ended without
 * closing (the claim proves nobody holds it). The backend may still have
 * its rings mapped and would not answer a new Initialising, so the close is
 * handshaken first (Closing, then Closed, as Linux's blkfront does before
 * it starts over). Returns what was found, or null when the vbd was idle.
 */
export async function takeOver(
  platform: XenPlatform,
  loc: DeviceLocation,
  abandonedBy: number | null,
  timeoutMs: number,
): Promise<TakeOver | null> {
  const s = await readState(platform.xenstore, loc.frontend).catch(() => XenbusState.Unknown);
  if (!ENGAGED_STATES.includes(s)) return null;
  await closeHandshake(platform, loc, await backendEngaged(platform, loc), timeoutMs);
  return { state: xenbusStateName(s), pid: abandonedBy };
}

/** True when the backend has gone past waiting for us (InitWait or later, and not Closed): a close must be handshaken. */
export async function backendEngaged(platform: XenPlatform, loc: DeviceLocation): Promise<boolean> {
  const s = await readState(platform.xenstore, loc.backend).catch(() => XenbusState.Unknown);
  return s !== XenbusState.Unknown && s !== XenbusState.Initialising && s !== XenbusState.Closed;
}

/**
 * The xenbus side of closing: Closing, then Closed once the backend
 * follows, and wait for it to be Closed (or back in InitWait), so the
 * backend has unmapped everything before the grants end. With `engaged`
 * false (a backend that never got going) only our state goes Closed.
 */
export async function closeHandshake(platform: XenPlatform, loc: DeviceLocation, engaged: boolean, timeoutMs: number): Promise<void> {
  const xs = platform.xenstore;
  if (engaged) {
    try {
      await switchState(xs, loc.frontend, XenbusState.Closing);
      await waitForState(xs, loc.backend, [XenbusState.Closing, XenbusState.Closed, XenbusState.Unknown], { timeoutMs });
    } catch (err) {
      if (!isXenError(err)) throw err;
    }
  }
  await switchState(xs, loc.frontend, XenbusState.Closed).catch(() => undefined);
  if (engaged) {
    await waitForState(xs, loc.backend, [XenbusState.Closed, XenbusState.InitWait, XenbusState.Unknown], { timeoutMs }).catch(
      () => undefined,
    );
  }
}

/**
 * An open that failed part-way: leave the vbd as a close would (both ends
 * Closed, so the backend goes back to InitWait for the next open), release
 * what was shared, and give up the claim however that went.
 */
export async function undoOpen(
  platform: XenPlatform,
  loc: DeviceLocation,
  timeoutMs: number,
  release: () => Promise<void>,
  claim: { release(): void },
): Promise<void> {
  try {
    const engaged = await backendEngaged(platform, loc);
    await closeHandshake(platform, loc, engaged, timeoutMs).catch(() => undefined);
    await release();
  } finally {
    // However the undoing went, the vbd is not ours any more.
    claim.release();
  }
}
