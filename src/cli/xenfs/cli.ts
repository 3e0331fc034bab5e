#!/usr/bin/env node
/**
 * xenfs: files on a Xen virtual disk. `xenfs --help` lists the commands.
 */
import { runBin } from '../common/bin.js';
import { main } from './main.js';

runBin('xenfs', main);
