#!/usr/bin/env node
/**
 * blkbench: a block I/O benchmark for the xen-blkfront driver, fio-style.
 * `blkbench --help` lists every option with examples.
 */
import { runBin } from '../common/bin.js';
import { main } from './main.js';

runBin('blkbench', main);
