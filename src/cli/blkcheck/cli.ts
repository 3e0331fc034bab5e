#!/usr/bin/env node
/**
 * blkcheck: a conformance and robustness checker for Xen block backends,
 * run from a guest. `blkcheck --help` lists every option with examples.
 */
import { runBin } from '../common/bin.js';
import { main } from './main.js';

runBin('blkcheck', main);
