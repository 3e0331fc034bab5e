/**
 * Xenstore permission strings (Xen's own xenstore.txt, GET_PERMS/SET_PERMS):
 * a letter then a domid, e.g. `b5`. The first entry names the owner, and its
 * letter is what every domain not listed after it gets.
 */

/** n: none, r: read, w: write, b: both. */
export type XsPermLetter = 'n' | 'r' | 'w' | 'b';

export interface XsPerm {
  perm: XsPermLetter;
  domid: number;
}

/** Parses one `<letter><domid>` entry; undefined if it is not one. */
export function parseXsPerm(s: string): XsPerm | undefined {
  const m = /^([nrwb])(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const domid = Number(m[2]);
  if (domid > 0xffff) return undefined;
  return { perm: m[1] as XsPermLetter, domid };
}

export function formatXsPerm(p: XsPerm): string {
  return `${p.perm}${p.domid}`;
}

export function canReadPerm(letter: XsPermLetter): boolean {
  return letter === 'r' || letter === 'b';
}

export function canWritePerm(letter: XsPermLetter): boolean {
  return letter === 'w' || letter === 'b';
}
