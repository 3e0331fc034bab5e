#!/usr/bin/env node
/**
 * blkbench: a block I/O benchmark for the xen-blkfront driver, fio-style.
 * `blkbench --help` lists every option with examples.
 */
import { main } from './main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`blkbench: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
