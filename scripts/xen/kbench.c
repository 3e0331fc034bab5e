/*
 * kbench: the kernel side of the Xen suite's comparison. It drives a block
 * device through the kernel's own driver with Linux native AIO and O_DIRECT,
 * keeping exactly --iodepth I/Os in flight, the way blkbench drives the same
 * workload through xen-blkfront-in-userspace. Like blkbench it leaves a ramp
 * time out of the figures, and it reports the CPU the whole guest spent over
 * the measured phase (from /proc/stat: the kernel driver's work happens in
 * interrupt and softirq context, not in this process), so that both sides'
 * CPU per I/O is counted the same way.
 *
 * Native AIO through raw system calls (io_setup, io_submit, io_getevents):
 * it needs nothing but the C library and the kernel's UAPI headers, and it is
 * linked statically so the guest needs no library at all.
 *
 *   kbench DEVICE read|write|randread|randwrite BS IODEPTH SIZE RUNTIME_S RAMP_S [THREADS]
 *
 * With THREADS (fio's numjobs), that many threads each keep IODEPTH I/Os in
 * flight on their own file and AIO context, with their own random sequence;
 * their I/Os are summed, the time is the longest, and the CPU is measured
 * over the first thread's window (they start and stop together).
 *
 * Prints one JSON object on stdout.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/aio_abi.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAX_DEPTH 256
#define MAX_THREADS 16

static int io_setup(unsigned nr, aio_context_t *ctx) { return syscall(SYS_io_setup, nr, ctx); }
static int io_submit(aio_context_t ctx, long n, struct iocb **iocbs) { return syscall(SYS_io_submit, ctx, n, iocbs); }
static int io_getevents(aio_context_t ctx, long min, long max, struct io_event *ev, struct timespec *t)
{
	return syscall(SYS_io_getevents, ctx, min, max, ev, t);
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Busy and total jiffies of the whole guest, from /proc/stat's first line. */
static void machine_cpu(unsigned long long *busy, unsigned long long *total)
{
	unsigned long long v[10] = { 0 };
	FILE *f = fopen("/proc/stat", "r");
	*busy = *total = 0;
	if (!f)
		return;
	if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5],
		   &v[6], &v[7], &v[8], &v[9]) >= 8) {
		/* user nice system idle iowait irq softirq steal: idle and iowait are not busy, steal is not ours. */
		*busy = v[0] + v[1] + v[2] + v[5] + v[6];
		*total = *busy + v[3] + v[4];
	}
	fclose(f);
}

static void die(const char *what)
{
	fprintf(stderr, "kbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

struct job {
	const char *dev;
	int write, random;
	long bs, depth;
	long long blocks, seq;
	double ramp, runtime;
	uint64_t rng;
	/* Results: I/Os and time measured; for the first job also the CPU over its window. */
	long long ios;
	double seconds;
	unsigned long long busy0, busy1, total0, total1;
	struct rusage ru0, ru1;
	int first;
	pthread_barrier_t *go;
};

/* A small xorshift per job, so the random offsets need no libc state. */
static uint64_t next_rand(struct job *j)
{
	j->rng ^= j->rng << 13;
	j->rng ^= j->rng >> 7;
	j->rng ^= j->rng << 17;
	return j->rng;
}

static void *run(void *arg)
{
	struct job *j = arg;
	long bs = j->bs, depth = j->depth;
	int fd = open(j->dev, (j->write ? O_RDWR : O_RDONLY) | O_DIRECT);
	if (fd < 0)
		die(j->dev);
	aio_context_t ctx = 0;
	if (io_setup(depth, &ctx) < 0)
		die("io_setup");

	struct iocb *cbs = calloc(depth, sizeof(*cbs));
	struct iocb **ptrs = calloc(depth, sizeof(*ptrs));
	struct io_event *events = calloc(depth, sizeof(*events));
	if (!cbs || !ptrs || !events)
		die("calloc");
	for (long i = 0; i < depth; i++) {
		void *buf;
		if (posix_memalign(&buf, 4096, bs))
			die("posix_memalign");
		memset(buf, 0x5a, bs);
		cbs[i].aio_fildes = fd;
		cbs[i].aio_lio_opcode = j->write ? IOCB_CMD_PWRITE : IOCB_CMD_PREAD;
		cbs[i].aio_buf = (uint64_t)(uintptr_t)buf;
		cbs[i].aio_nbytes = bs;
		cbs[i].aio_data = i;
	}
#define AIM(cb) ((cb)->aio_offset = (long long)bs * (j->random ? (long long)(next_rand(j) % j->blocks) : (j->seq++ % j->blocks)))

	for (long i = 0; i < depth; i++) {
		AIM(&cbs[i]);
		ptrs[i] = &cbs[i];
	}
	pthread_barrier_wait(j->go);
	if (io_submit(ctx, depth, ptrs) != depth)
		die("io_submit");

	double start = now(), t0 = 0, end = start + j->ramp + j->runtime;
	int measuring = j->ramp == 0;
	if (measuring) {
		t0 = start;
		if (j->first) {
			machine_cpu(&j->busy0, &j->total0);
			getrusage(RUSAGE_SELF, &j->ru0);
		}
	}
	long inflight = depth;
	double t = start;
	while (inflight > 0) {
		int n = io_getevents(ctx, 1, depth, events, NULL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			die("io_getevents");
		}
		t = now();
		if (!measuring && t >= start + j->ramp) {
			measuring = 1;
			t0 = t;
			if (j->first) {
				machine_cpu(&j->busy0, &j->total0);
				getrusage(RUSAGE_SELF, &j->ru0);
			}
		}
		int again = 0;
		for (int i = 0; i < n; i++) {
			struct iocb *cb = (struct iocb *)(uintptr_t)events[i].obj;
			if ((long long)events[i].res != bs) {
				fprintf(stderr, "kbench: I/O at %lld returned %lld\n", (long long)cb->aio_offset, (long long)events[i].res);
				exit(1);
			}
			if (measuring)
				j->ios++;
			inflight--;
			if (t < end) {
				AIM(cb);
				ptrs[again++] = cb;
			}
		}
		if (again > 0) {
			if (io_submit(ctx, again, ptrs) != again)
				die("io_submit");
			inflight += again;
		}
	}
	j->seconds = t - t0;
	if (j->first) {
		machine_cpu(&j->busy1, &j->total1);
		getrusage(RUSAGE_SELF, &j->ru1);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc != 8 && argc != 9) {
		fprintf(stderr, "usage: kbench DEVICE read|write|randread|randwrite BS IODEPTH SIZE RUNTIME_S RAMP_S [THREADS]\n");
		return 2;
	}
	const char *rw = argv[2];
	long bs = atol(argv[3]), depth = atol(argv[4]), threads = argc == 9 ? atol(argv[8]) : 1;
	long long size = atoll(argv[5]);
	double runtime = atof(argv[6]), ramp = atof(argv[7]);
	if (bs <= 0 || bs % 512 || depth < 1 || depth > MAX_DEPTH || size < bs || runtime <= 0 || ramp < 0 || threads < 1 ||
	    threads > MAX_THREADS) {
		fprintf(stderr, "kbench: bad arguments\n");
		return 2;
	}
	static struct job jobs[MAX_THREADS];
	static pthread_t tids[MAX_THREADS];
	pthread_barrier_t go;
	pthread_barrier_init(&go, NULL, threads);
	for (long i = 0; i < threads; i++) {
		struct job *j = &jobs[i];
		j->dev = argv[1];
		j->write = strstr(rw, "write") != NULL;
		j->random = strncmp(rw, "rand", 4) == 0;
		j->bs = bs;
		j->depth = depth;
		j->blocks = size / bs;
		j->ramp = ramp;
		j->runtime = runtime;
		j->rng = 88172645463325252ull + 0x9e3779b97f4a7c15ull * i;
		j->first = i == 0;
		j->go = &go;
		if (pthread_create(&tids[i], NULL, run, j))
			die("pthread_create");
	}
	long long ios = 0;
	double seconds = 0;
	for (long i = 0; i < threads; i++) {
		pthread_join(tids[i], NULL);
		ios += jobs[i].ios;
		if (jobs[i].seconds > seconds)
			seconds = jobs[i].seconds;
	}
	struct job *j = &jobs[0];
	double user = (j->ru1.ru_utime.tv_sec - j->ru0.ru_utime.tv_sec) + (j->ru1.ru_utime.tv_usec - j->ru0.ru_utime.tv_usec) / 1e6;
	double sys = (j->ru1.ru_stime.tv_sec - j->ru0.ru_stime.tv_sec) + (j->ru1.ru_stime.tv_usec - j->ru0.ru_stime.tv_usec) / 1e6;
	double hz = sysconf(_SC_CLK_TCK);
	printf("{\"ios\":%lld,\"seconds\":%.6f,\"iops\":%.1f,\"bandwidth_bytes_per_s\":%.1f,"
	       "\"process_cpu_s\":%.3f,\"machine_busy_s\":%.3f,\"machine_total_s\":%.3f,\"threads\":%ld}\n",
	       ios, seconds, ios / seconds, ios * (double)bs / seconds, user + sys, (j->busy1 - j->busy0) / hz,
	       (j->total1 - j->total0) / hz, threads);
	return 0;
}
