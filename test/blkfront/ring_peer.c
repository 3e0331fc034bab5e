/*
 * A blkif backend written with Xen's own ring.h macros, as a peer for the
 * TypeScript frontend's ring code: BACK_RING_ATTACH over a shared ring in a
 * file both processes map, RING_GET_REQUEST, RING_PUSH_RESPONSES_AND_CHECK_NOTIFY
 * and RING_FINAL_CHECK_FOR_REQUESTS exactly as xen-blkback uses them.
 *
 *   ring_peer SHM RING_PAGES DATA_PAGES IMAGE
 *
 * SHM holds RING_PAGES ring pages then DATA_PAGES data pages; a "grant ref" is
 * the index of a data page. Event channels are bytes on pipes: one byte on
 * stdin is a notification from the frontend, one byte written to stdout is a
 * notification to it. At EOF on stdin it prints its counters on stderr.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define mb()  __sync_synchronize()
#define rmb() __sync_synchronize()
#define wmb() __sync_synchronize()

#include <xen/xen.h>
#include <xen/io/blkif.h>

#define PAGE 4096

int main(int argc, char **argv)
{
    if (argc != 5) { fprintf(stderr, "usage: ring_peer SHM RING_PAGES DATA_PAGES IMAGE\n"); return 2; }
    int ring_pages = atoi(argv[2]), data_pages = atoi(argv[3]);
    int shm = open(argv[1], O_RDWR);
    int img = open(argv[4], O_RDWR);
    if (shm < 0 || img < 0) { perror("open"); return 1; }
    uint8_t *mem = mmap(NULL, (size_t)(ring_pages + data_pages) * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
    if (mem == MAP_FAILED) { perror("mmap"); return 1; }
    uint8_t *data = mem + (size_t)ring_pages * PAGE;
    off_t disk_bytes = lseek(img, 0, SEEK_END);

    blkif_sring_t *sring = (blkif_sring_t *)mem;
    blkif_back_ring_t ring;
    BACK_RING_ATTACH(&ring, sring, sring->rsp_prod, (size_t)ring_pages * PAGE);

    unsigned long kicks = 0, requests = 0, notifies = 0, errors = 0, wakeups = 0;
    char byte;
    printf("ready %u\n", RING_SIZE(&ring));
    fflush(stdout);
    while (read(0, &byte, 1) == 1) {
        kicks++;
        int more, worked = 0;
        do {
            RING_IDX rp = ring.sring->req_prod;
            rmb();
            while (ring.req_cons != rp) {
                blkif_request_t req;
                memcpy(&req, RING_GET_REQUEST(&ring, ring.req_cons), sizeof(req));
                ring.req_cons++;
                requests++;
                worked = 1;
                int16_t st = BLKIF_RSP_OKAY;
                if (req.operation == BLKIF_OP_READ || req.operation == BLKIF_OP_WRITE) {
                    off_t pos = (off_t)req.sector_number * 512;
                    if (req.nr_segments == 0 || req.nr_segments > BLKIF_MAX_SEGMENTS_PER_REQUEST) st = BLKIF_RSP_ERROR;
                    for (int i = 0; st == BLKIF_RSP_OKAY && i < req.nr_segments; i++) {
                        struct blkif_request_segment *s = &req.seg[i];
                        size_t len = (size_t)(s->last_sect - s->first_sect + 1) * 512;
                        if (s->gref >= (uint32_t)data_pages || s->last_sect > 7 || s->last_sect < s->first_sect || pos + (off_t)len > disk_bytes) {
                            st = BLKIF_RSP_ERROR;
                            break;
                        }
                        uint8_t *buf = data + (size_t)s->gref * PAGE + s->first_sect * 512;
                        ssize_t n = req.operation == BLKIF_OP_READ ? pread(img, buf, len, pos) : pwrite(img, buf, len, pos);
                        if (n != (ssize_t)len) st = BLKIF_RSP_ERROR;
                        pos += len;
                    }
                } else if (req.operation == BLKIF_OP_FLUSH_DISKCACHE) {
                    if (fdatasync(img) != 0) st = BLKIF_RSP_ERROR;
                } else {
                    st = BLKIF_RSP_EOPNOTSUPP;
                }
                if (st != BLKIF_RSP_OKAY) errors++;
                blkif_response_t *rsp = RING_GET_RESPONSE(&ring, ring.rsp_prod_pvt);
                rsp->id = req.id;
                rsp->operation = req.operation;
                rsp->status = st;
                ring.rsp_prod_pvt++;
                int notify;
                RING_PUSH_RESPONSES_AND_CHECK_NOTIFY(&ring, notify);
                if (notify) {
                    if (write(1, "!", 1) != 1) return 1;
                    notifies++;
                }
            }
            RING_FINAL_CHECK_FOR_REQUESTS(&ring, more);
        } while (more);
        wakeups += worked;
    }
    fprintf(stderr, "kicks=%lu wakeups=%lu requests=%lu notifies=%lu errors=%lu\n", kicks, wakeups, requests, notifies, errors);
    return 0;
}
