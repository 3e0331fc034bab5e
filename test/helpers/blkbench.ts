/** blkbench's command line, as the tests of it need it. */

/** The options that take a value. */
export const VALUE_OPTIONS = [
  '--rw',
  '--rwmixread',
  '--bs',
  '--iodepth',
  '--queues',
  '--numjobs',
  '--size',
  '--runtime',
  '--number-ios',
  '--ramp-time',
  '--offset',
  '--seed',
  '--image',
  '--ramdisk',
  '--tmpdir',
  '--vdev',
  '--ring-pages',
  '--lat-every',
  '--plot',
];

/** The switches (each also has a --no- form where it defaults on). */
export const SWITCHES = ['--xen', '--persistent', '--indirect', '--pool', '--zero-copy', '--verify', '--baseline', '--json', '--progress'];
