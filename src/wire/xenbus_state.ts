/**
 * enum xenbus_state (xen/io/xenbus.h): the state each end of a split device
 * publishes in its `state` key.
 */
export const XenbusState = {
  Unknown: 0,
  Initialising: 1,
  /** Finished early initialisation; waiting for information from the peer. */
  InitWait: 2,
  /** Initialised and waiting for a connection from the peer. */
  Initialised: 3,
  Connected: 4,
  /** The device is being closed due to an error or an unplug event. */
  Closing: 5,
  Closed: 6,
  /** Reconfiguring (used by some backends, e.g. pciback). */
  Reconfiguring: 7,
  Reconfigured: 8,
} as const;
export type XenbusState = (typeof XenbusState)[keyof typeof XenbusState];

const NAMES = Object.fromEntries(Object.entries(XenbusState).map(([k, v]) => [v, k])) as Record<number, string>;

/** Name of a state, or `state<N>` for a value xenbus.h does not define. */
export function xenbusStateName(s: number): string {
  return NAMES[s] ?? `state${s}`;
}

/**
 * Parses a `state` key's value. Returns undefined for anything that is not a
 * decimal number of a defined state: the caller decides whether that is an error.
 */
export function parseXenbusState(value: string): XenbusState | undefined {
  if (!/^\d{1,2}$/.test(value.trim())) return undefined;
  const n = Number(value.trim());
  return NAMES[n] === undefined ? undefined : (n as XenbusState);
}
