/*
 * Layout probe: compiled at test time against Debian's libxen-dev headers and
 * run; prints `name value` lines that test/wire/layouts.test.ts compares with
 * the TypeScript layouts. Built twice: -m64 (x86_64-abi) and -m32 (x86_32-abi).
 * Also drives ring.h's own macros over index values that wrap, so the TS
 * arithmetic is checked against Xen's code rather than a re-reading of it.
 */
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

#define P(name, v) printf("%s %lld\n", name, (long long)(v))
#define SZ(t) P("sizeof." #t, sizeof(struct t))
#define OFF(t, f) P("offsetof." #t "." #f, offsetof(struct t, f))

static uint32_t lcg = 12345;
static uint32_t rnd(void) { lcg = lcg * 1103515245u + 12345u; return lcg; }

int main(void)
{
    P("abi.bits", sizeof(void *) * 8);

    SZ(blkif_request_segment);
    OFF(blkif_request_segment, gref);
    OFF(blkif_request_segment, first_sect);
    OFF(blkif_request_segment, last_sect);

    SZ(blkif_request);
    OFF(blkif_request, operation);
    OFF(blkif_request, nr_segments);
    OFF(blkif_request, handle);
    OFF(blkif_request, id);
    OFF(blkif_request, sector_number);
    OFF(blkif_request, seg);

    SZ(blkif_request_indirect);
    OFF(blkif_request_indirect, operation);
    OFF(blkif_request_indirect, indirect_op);
    OFF(blkif_request_indirect, nr_segments);
    OFF(blkif_request_indirect, id);
    OFF(blkif_request_indirect, sector_number);
    OFF(blkif_request_indirect, handle);
    OFF(blkif_request_indirect, indirect_grefs);

    SZ(blkif_request_discard);
    OFF(blkif_request_discard, operation);
    OFF(blkif_request_discard, flag);
    OFF(blkif_request_discard, handle);
    OFF(blkif_request_discard, id);
    OFF(blkif_request_discard, sector_number);
    OFF(blkif_request_discard, nr_sectors);

    SZ(blkif_response);
    OFF(blkif_response, id);
    OFF(blkif_response, operation);
    OFF(blkif_response, status);

    P("sizeof.blkif_sring_entry", sizeof(union blkif_sring_entry));
    OFF(blkif_sring, req_prod);
    OFF(blkif_sring, req_event);
    OFF(blkif_sring, rsp_prod);
    OFF(blkif_sring, rsp_event);
    OFF(blkif_sring, pvt);
    OFF(blkif_sring, ring);

    P("BLKIF_OP_READ", BLKIF_OP_READ);
    P("BLKIF_OP_WRITE", BLKIF_OP_WRITE);
    P("BLKIF_OP_WRITE_BARRIER", BLKIF_OP_WRITE_BARRIER);
    P("BLKIF_OP_FLUSH_DISKCACHE", BLKIF_OP_FLUSH_DISKCACHE);
    P("BLKIF_OP_RESERVED_1", BLKIF_OP_RESERVED_1);
    P("BLKIF_OP_DISCARD", BLKIF_OP_DISCARD);
    P("BLKIF_OP_INDIRECT", BLKIF_OP_INDIRECT);
    P("BLKIF_MAX_SEGMENTS_PER_REQUEST", BLKIF_MAX_SEGMENTS_PER_REQUEST);
    P("BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST", BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST);
    P("BLKIF_RSP_OKAY", BLKIF_RSP_OKAY);
    P("BLKIF_RSP_ERROR", BLKIF_RSP_ERROR);
    P("BLKIF_RSP_EOPNOTSUPP", BLKIF_RSP_EOPNOTSUPP);
    P("BLKIF_DISCARD_SECURE", BLKIF_DISCARD_SECURE);
    P("VDISK_CDROM", VDISK_CDROM);
    P("VDISK_REMOVABLE", VDISK_REMOVABLE);
    P("VDISK_READONLY", VDISK_READONLY);

    /* Ring sizes for 1..16 pages, from ring.h's own macro. */
    for (int pages = 1; pages <= 16; pages *= 2) {
        char name[64];
        snprintf(name, sizeof(name), "ring_entries.%d", pages);
        P(name, __CONST_RING_SIZE(blkif, 4096 * pages));
    }

    /* grant_table.h */
    SZ(grant_entry_v1);
    OFF(grant_entry_v1, flags);
    OFF(grant_entry_v1, domid);
    OFF(grant_entry_v1, frame);
    P("GTF_permit_access", GTF_permit_access);
    P("GTF_accept_transfer", GTF_accept_transfer);
    P("GTF_transitive", GTF_transitive);
    P("GTF_type_mask", GTF_type_mask);
    P("GTF_readonly", GTF_readonly);
    P("GTF_reading", GTF_reading);
    P("GTF_writing", GTF_writing);
    P("GNTTAB_NR_RESERVED_ENTRIES", GNTTAB_NR_RESERVED_ENTRIES);
    P("GNTTAB_RESERVED_CONSOLE", GNTTAB_RESERVED_CONSOLE);
    P("GNTTAB_RESERVED_XENSTORE", GNTTAB_RESERVED_XENSTORE);
    P("GNTST_okay", GNTST_okay);
    P("GNTST_general_error", GNTST_general_error);
    P("GNTST_bad_domain", GNTST_bad_domain);
    P("GNTST_bad_gntref", GNTST_bad_gntref);
    P("GNTST_bad_handle", GNTST_bad_handle);
    P("GNTST_bad_virt_addr", GNTST_bad_virt_addr);
    P("GNTST_permission_denied", GNTST_permission_denied);
    P("GNTST_no_space", GNTST_no_space);

    /* xs_wire.h */
    SZ(xsd_sockmsg);
    OFF(xsd_sockmsg, type);
    OFF(xsd_sockmsg, req_id);
    OFF(xsd_sockmsg, tx_id);
    OFF(xsd_sockmsg, len);
    P("XS_CONTROL", XS_CONTROL);
    P("XS_DIRECTORY", XS_DIRECTORY);
    P("XS_READ", XS_READ);
    P("XS_GET_PERMS", XS_GET_PERMS);
    P("XS_WATCH", XS_WATCH);
    P("XS_UNWATCH", XS_UNWATCH);
    P("XS_TRANSACTION_START", XS_TRANSACTION_START);
    P("XS_TRANSACTION_END", XS_TRANSACTION_END);
    P("XS_INTRODUCE", XS_INTRODUCE);
    P("XS_RELEASE", XS_RELEASE);
    P("XS_GET_DOMAIN_PATH", XS_GET_DOMAIN_PATH);
    P("XS_WRITE", XS_WRITE);
    P("XS_MKDIR", XS_MKDIR);
    P("XS_RM", XS_RM);
    P("XS_SET_PERMS", XS_SET_PERMS);
    P("XS_WATCH_EVENT", XS_WATCH_EVENT);
    P("XS_ERROR", XS_ERROR);
    P("XS_IS_DOMAIN_INTRODUCED", XS_IS_DOMAIN_INTRODUCED);
    P("XS_RESUME", XS_RESUME);
    P("XS_SET_TARGET", XS_SET_TARGET);
    P("XS_RESET_WATCHES", XS_RESET_WATCHES);
    P("XS_DIRECTORY_PART", XS_DIRECTORY_PART);
    P("XS_TYPE_COUNT", XS_TYPE_COUNT);
    P("XS_INVALID", XS_INVALID);
    P("XS_WATCH_PATH", XS_WATCH_PATH);
    P("XS_WATCH_TOKEN", XS_WATCH_TOKEN);
    P("XENSTORE_PAYLOAD_MAX", XENSTORE_PAYLOAD_MAX);
    P("XENSTORE_ABS_PATH_MAX", XENSTORE_ABS_PATH_MAX);
    P("XENSTORE_REL_PATH_MAX", XENSTORE_REL_PATH_MAX);
    P("XENSTORE_RING_SIZE", XENSTORE_RING_SIZE);
    SZ(xenstore_domain_interface);
    OFF(xenstore_domain_interface, req);
    OFF(xenstore_domain_interface, rsp);
    OFF(xenstore_domain_interface, req_cons);
    OFF(xenstore_domain_interface, req_prod);
    OFF(xenstore_domain_interface, rsp_cons);
    OFF(xenstore_domain_interface, rsp_prod);
    OFF(xenstore_domain_interface, server_features);
    OFF(xenstore_domain_interface, connection);
    OFF(xenstore_domain_interface, error);
    P("XENSTORE_SERVER_FEATURE_RECONNECTION", XENSTORE_SERVER_FEATURE_RECONNECTION);
    P("XENSTORE_SERVER_FEATURE_ERROR", XENSTORE_SERVER_FEATURE_ERROR);
    P("XENSTORE_CONNECTED", XENSTORE_CONNECTED);
    P("XENSTORE_RECONNECT", XENSTORE_RECONNECT);
    P("XENSTORE_ERROR_NONE", XENSTORE_ERROR_NONE);
    P("XENSTORE_ERROR_COMM", XENSTORE_ERROR_COMM);
    P("XENSTORE_ERROR_RINGIDX", XENSTORE_ERROR_RINGIDX);
    P("XENSTORE_ERROR_PROTO", XENSTORE_ERROR_PROTO);
    for (int i = 0; i < (int)(sizeof(xsd_errors) / sizeof(xsd_errors[0])); i++)
        printf("xsd_errors.%d %s\n", i, xsd_errors[i].errstring);

    /* xenbus.h */
    P("XenbusStateUnknown", XenbusStateUnknown);
    P("XenbusStateInitialising", XenbusStateInitialising);
    P("XenbusStateInitWait", XenbusStateInitWait);
    P("XenbusStateInitialised", XenbusStateInitialised);
    P("XenbusStateConnected", XenbusStateConnected);
    P("XenbusStateClosing", XenbusStateClosing);
    P("XenbusStateClosed", XenbusStateClosed);
    P("XenbusStateReconfiguring", XenbusStateReconfiguring);
    P("XenbusStateReconfigured", XenbusStateReconfigured);

    /*
     * ring.h's event rules run on Xen's own macros. Each line:
     *   push <old> <new> <event> <notify>
     *   final <rsp_prod> <rsp_cons> <work_to_do> <rsp_event after>
     * Values cluster around 2^32 so the u32 wrap is exercised.
     */
    static union { struct blkif_sring s; char page[4096]; } u;
    struct blkif_sring *sring = &u.s;
    blkif_front_ring_t front;
    SHARED_RING_INIT(sring);
    FRONT_RING_INIT(&front, sring, 4096);
    P("init.req_event", sring->req_event);
    P("init.rsp_event", sring->rsp_event);
    for (int i = 0; i < 2000; i++) {
        uint32_t base = (i % 3 == 0) ? (0xffffffffu - (rnd() % 64)) : rnd();
        uint32_t old = base;
        uint32_t n = old + (rnd() % 40);
        uint32_t ev = old + (rnd() % 80) - 20;
        int notify;
        sring->req_prod = old;
        sring->req_event = ev;
        front.req_prod_pvt = n;
        RING_PUSH_REQUESTS_AND_CHECK_NOTIFY(&front, notify);
        printf("push %u %u %u %d\n", old, n, ev, notify);
    }
    for (int i = 0; i < 500; i++) {
        uint32_t cons = (i % 2) ? (0xffffffffu - (rnd() % 8)) : rnd();
        uint32_t prod = (i % 4 < 2) ? cons : cons + (rnd() % 5);
        int work;
        sring->rsp_prod = prod;
        sring->rsp_event = 7;
        front.rsp_cons = cons;
        RING_FINAL_CHECK_FOR_RESPONSES(&front, work);
        /* work_to_do is RING_HAS_UNCONSUMED_RESPONSES: a count; only its truth matters. */
        printf("final %u %u %d %u\n", prod, cons, work != 0, sring->rsp_event);
    }
    return 0;
}
