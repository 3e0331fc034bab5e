/**
 * Grant table v1 entries (xen/grant_table.h):
 *
 *   struct grant_entry_v1 {
 *       uint16_t flags;   // GTF_xxx
 *       domid_t  domid;   // the domain being granted privileges
 *       uint32_t frame;   // the page frame being granted
 *   };
 */
export const GRANT_ENTRY_V1_SIZE = 8;
export const GrantEntryV1Offset = { flags: 0, domid: 2, frame: 4 } as const;

/** Type field of `flags` (GTF_type_mask = 3). */
export const GTF_invalid = 0;
export const GTF_permit_access = 1;
export const GTF_accept_transfer = 2;
export const GTF_transitive = 3;
export const GTF_type_mask = 3;
/** Subflags for GTF_permit_access. */
export const GTF_readonly = 1 << 2;
export const GTF_reading = 1 << 3;
export const GTF_writing = 1 << 4;
export const GTF_PWT = 1 << 5;
export const GTF_PCD = 1 << 6;
export const GTF_PAT = 1 << 7;

export interface GrantEntryV1 {
  flags: number;
  domid: number;
  frame: number;
}

export function decodeGrantEntryV1(view: DataView, off: number): GrantEntryV1 {
  return {
    flags: view.getUint16(off + GrantEntryV1Offset.flags, true),
    domid: view.getUint16(off + GrantEntryV1Offset.domid, true),
    frame: view.getUint32(off + GrantEntryV1Offset.frame, true),
  };
}

export function encodeGrantEntryV1(view: DataView, off: number, e: GrantEntryV1): void {
  if (e.flags < 0 || e.flags > 0xffff) throw new RangeError(`grant flags ${e.flags} is not a u16`);
  if (e.domid < 0 || e.domid > 0xffff) throw new RangeError(`domid ${e.domid} is not a u16`);
  if (e.frame < 0 || e.frame > 0xffffffff) throw new RangeError(`frame ${e.frame} is not a u32`);
  view.setUint16(off + GrantEntryV1Offset.domid, e.domid, true);
  view.setUint32(off + GrantEntryV1Offset.frame, e.frame, true);
  // Xen requires flags to be written last: it is what makes the entry live.
  view.setUint16(off + GrantEntryV1Offset.flags, e.flags, true);
}

/** Grant refs the toolstack owns (grant_table.h): a guest never allocates these. */
export const GNTTAB_NR_RESERVED_ENTRIES = 8;
export const GNTTAB_RESERVED_CONSOLE = 0;
/** The xenstore ring page is granted to the xenstore domain through this ref. */
export const GNTTAB_RESERVED_XENSTORE = 1;

/** Status codes of grant-table operations (grant_table.h GNTST_*). */
export const GNTST_okay = 0;
export const GNTST_general_error = -1;
export const GNTST_bad_domain = -2;
export const GNTST_bad_gntref = -3;
export const GNTST_bad_handle = -4;
export const GNTST_bad_virt_addr = -5;
export const GNTST_permission_denied = -8;
export const GNTST_no_space = -13;

/** Bytes in a grant entry's first 32-bit word: flags (low half) and domid (high half), as Xen reads them together. */
export function grantCombo(flags: number, domid: number): number {
  return (flags & 0xffff) | ((domid & 0xffff) << 16);
}
