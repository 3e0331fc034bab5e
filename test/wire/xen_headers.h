/*
 * Xen's public headers as the layout checks see them (Debian's libxen-dev):
 * included by probe.c, which runs, and by the compile-only checks that
 * test/wire/layouts.test.ts generates for each ABI.
 */
#ifndef XEN_HEADERS_H
#define XEN_HEADERS_H
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <errno.h> /* xs_wire.h defines xsd_errors[] only when EINVAL is known */

/* ring.h maps xen_mb()/xen_rmb()/xen_wmb() to mb()/rmb()/wmb(), which its user supplies. */
#define mb()  __sync_synchronize()
#define rmb() __sync_synchronize()
#define wmb() __sync_synchronize()

#include <xen/xen.h>
#include <xen/grant_table.h>
#include <xen/io/blkif.h>
#include <xen/io/xs_wire.h>
#include <xen/io/xenbus.h>
#endif
