/**
 * The simulated Xen host: a first-class module, not a test helper. It lets
 * the driver (and its users' programs) run anywhere Node runs.
 */
export { SimXenstored } from './xenstored/server.js';
export type { ServerConnection } from './xenstored/connection.js';
export type { SimXenstoredOptions, SimXenstoredStats, ConnectOptions } from './xenstored/server.js';
export { listenXenstored } from './xenstored/daemon.js';
export type { XenstoredDaemon } from './xenstored/daemon.js';
export { createMemoryPipe } from '../transport/memory.js';
export type { MemoryPipeOptions } from '../transport/memory.js';

export { createSimHost, attachSimHost } from './machine.js';
export type { SimHost, SimHostOptions, SimDom0, SimGrantCounters, SimGuestProcess } from './machine.js';
export { SimVbdOwners } from './host/ownership.js';
export { SimHypervisor, Counter as SimCounter } from './host/hypervisor.js';
export type { SimHostHandle, SimDomainHandle, DomainOptions } from './host/hypervisor.js';
export { SimEventChannels } from './host/evtchn.js';
export { SimGrantSharer, SimGrantMapper } from './host/grants.js';
export type { SimGrantShare } from './host/grants.js';
export type { SimSharedPages, FrameAllocator } from './host/grants.js';
export type { SimDomain } from './host/hypervisor.js';
export type { Caller } from './xenstored/store.js';
export type { GrantMapping } from './host/grants.js';
export { linkXenstoreRing } from './host/xenstore_ring.js';
export type { XenstoreRingOptions, XenstoreRingLink } from './host/xenstore_ring.js';
export { SimBlkback } from './blkback/backend.js';
export type { SimDiskOptions, SimFault, SimBlkbackStats } from './blkback/backend.js';
