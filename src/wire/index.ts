/** The pure wire layouts: xs_wire.h, blkif.h, ring.h, grant_table.h, xenbus.h. */
export * from './xs_wire.js';
export * from './blkif.js';
export * from './ring.js';
export * from './grant_table.js';
export * from './xenbus_state.js';
export * from './xs_parser.js';
export * from './xs_perms.js';
