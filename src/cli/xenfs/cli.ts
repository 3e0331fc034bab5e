#!/usr/bin/env node
/**
 * xenfs: files on a Xen virtual disk. `xenfs --help` lists the commands.
 */
import { main } from './main.js';

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`xenfs: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
