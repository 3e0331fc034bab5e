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
