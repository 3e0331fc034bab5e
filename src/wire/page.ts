/** Xen's page size on x86 (XEN_PAGE_SIZE): grants, ring pages and blkif segments are in these units. */
export const PAGE_SIZE = 4096;
