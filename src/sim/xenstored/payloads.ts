/**
 * The simulated xenstored's payload helpers: arguments read from a request,
 * and the DIRECTORY_PART reply.
 */
import { XENSTORE_PAYLOAD_MAX, joinPayload, splitPayload, type XsMessage } from '../../wire/xs_wire.js';
import { XsErr } from './store.js';

export const OK = joinPayload(['OK']);

export function arg0(m: XsMessage): string | undefined {
  return splitPayload(m.payload)[0];
}

export function domidArg(s: string | undefined): number {
  if (s === undefined || !/^\d{1,5}$/.test(s)) throw new XsErr('EINVAL', `bad domid ${s}`);
  const d = Number(s);
  if (d > 0xffff) throw new XsErr('EINVAL', `bad domid ${s}`);
  return d;
}

/** True when `path` is `base` or below it. */
export function isUnder(path: string, base: string): boolean {
  return path === base || base === '/' || path.startsWith(`${base}/`);
}

/** DIRECTORY_PART's offset argument: a decimal byte offset (EINVAL otherwise). */
export function partOffset(s: string | undefined): number {
  if (s === undefined || !/^\d+$/.test(s)) throw new XsErr('EINVAL');
  return Number(s);
}

/**
 * DIRECTORY_PART: `<gen>\0` then whole child names starting at byte `off`
 * of the full list, as many as fit; the part that reaches the end carries
 * one more, empty, name.
 */
export function directoryPartReply(children: readonly string[], gen: number, off: number): Uint8Array {
  const full = joinPayload(children);
  if (off > full.length || (off > 0 && full[off - 1] !== 0)) throw new XsErr('EINVAL', 'offset is not a name boundary');
  const head = joinPayload([String(gen)]);
  const room = XENSTORE_PAYLOAD_MAX - head.length - 1; // keep a byte for the end marker
  let end = full.length;
  if (end - off > room) {
    end = full.lastIndexOf(0, off + room - 1) + 1;
    if (end <= off) throw new XsErr('E2BIG', 'a child name does not fit');
  }
  const last = end === full.length;
  const out = new Uint8Array(head.length + (end - off) + (last ? 1 : 0));
  out.set(head, 0);
  out.set(full.subarray(off, end), head.length);
  return out; // the trailing byte, when present, is already 0: the empty name
}
