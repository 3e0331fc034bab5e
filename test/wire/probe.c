/*
 * Behaviour probe: compiled at test time against Debian's libxen-dev headers
 * and run natively (x86_64); prints lines that test/wire/layouts.test.ts
 * compares with the TypeScript code. Figures (sizes, offsets, constants) are
 * checked by the compiler itself for both ABIs, without running anything;
 * this probe covers what only running code shows: xs_wire.h's error table
 * and ring.h's event rules, driven by Xen's own macros over index values
 * that wrap, so the TS arithmetic is checked against Xen's code rather than
 * a re-reading of it.
 */
#include "xen_headers.h"

#define P(name, v) printf("%s %lld\n", name, (long long)(v))

static uint32_t lcg = 12345;
static uint32_t rnd(void) { lcg = lcg * 1103515245u + 12345u; return lcg; }

int main(void)
{
    for (int i = 0; i < (int)(sizeof(xsd_errors) / sizeof(xsd_errors[0])); i++)
        printf("xsd_errors.%d %s\n", i, xsd_errors[i].errstring);

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
