/**
 * --cpu-profile: V8's sampling profiler over the driver's measured phase
 * only. `node --cpu-prof` covers the whole process, warm-up and start-up
 * included, which under emulation (where the JIT's code writes are dear)
 * would hide the steady state this option is for.
 */
import { Session } from 'node:inspector/promises';
import { writeFile } from 'node:fs/promises';
import type { RunHooks } from './run.js';

/** Sampling interval, µs: fine enough for a few seconds' run, coarse enough not to slow it much. */
const INTERVAL_US = 200;

/** `h`, with the profiler started after the ramp and its profile written to `file` after the run. */
export function profiled(h: RunHooks, file: string): RunHooks {
  const session = new Session();
  return {
    ...h,
    async afterRamp() {
      await h.afterRamp?.();
      session.connect();
      await session.post('Profiler.enable');
      await session.post('Profiler.setSamplingInterval', { interval: INTERVAL_US });
      await session.post('Profiler.start');
    },
    async afterRun() {
      const { profile } = await session.post('Profiler.stop');
      session.disconnect();
      await writeFile(file, JSON.stringify(profile));
      await h.afterRun?.();
    },
  };
}
