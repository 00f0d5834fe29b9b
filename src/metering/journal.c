/* The ledger's journal: an append-only log of usage rows on local disk, so
 * that settling a request costs a copy into the page cache (and, with
 * ledger_sync = full, a share of one fdatasync) instead of a database
 * commit. The ledger (the loops' idle steps, or its thread) copies
 * journaled rows into the store behind, and then lets go of the segments
 * it has copied.
 *
 * On disk: <dir>/ledger-<seq>.journal, seq counting up from 1. A segment
 * is a sequence of records, each a 16-byte header (magic, payload length,
 * the segment's seq, FNV-1a of seq, length and payload) and the payload.
 * Records are only ever appended, by one writer at a time, so a crash can
 * leave at most the last record of the last segment torn: replay stops at
 * the first record whose header or checksum does not hold, and everything
 * before it is intact. A segment is removed only after every row in it is
 * committed to the store, and the store ignores a row it already has
 * (request ids are unique), so replaying a segment twice bills nothing
 * twice.
 *
 * Segment files are reused: a released segment becomes the spare,
 * <dir>/spare-<seq>.journal, and the next segment is the spare renamed.
 * Writing over blocks a file already has changes no metadata, so an
 * fdatasync has only the data to flush (one write to the disk, not two
 * with the file system's journal: 95 against 130-170 us here). The first
 * spare is SEGMENT_BYTES of zeros, written when the journal opens. What a
 * reused file held before is never mistaken for new records: each record
 * names its segment, and segment numbers only grow (the spare's name
 * carries the highest number it may hold, so numbering continues above it
 * after a restart).
 *
 * A segment's file has its SEGMENT_BYTES allocated up front and is mapped
 * (MAP_SHARED): a record is copied into the mapping, which is the page
 * cache itself, as durable as a write() (it outlives the process; an
 * fdatasync of the file covers it) without a system call, so the ledger's
 * lock is held for a copy instead of a write (at c=64 the loops contended
 * for it about once a request). The blocks being allocated, a page fault on
 * the mapping never needs disk space (no SIGBUS when the disk is full).
 * Where a file cannot be allocated or mapped, and for the records that
 * overflow a full segment nobody may rotate yet, records go by pwrite(). */
#include "metering/internal.h"

#include "base/err.h"
#include "base/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAGIC 0x314a5853u /* "SXJ1" */
#define HEADER 16
#define RECORD_MAX 4096
/* A segment is closed once it holds this much; the ledger removes it when
 * its rows are in the store. */
#define SEGMENT_BYTES (4u << 20)

struct journal {
    char *dir;
    bool sync_dir; /* fsync the directory when a segment is created */
    int fd;        /* the segment being appended to, -1 before the first */
    unsigned char *map; /* its first SEGMENT_BYTES, mapped; NULL: pwrite() */
    uint32_t seq;  /* its number */
    uint32_t oldest; /* the oldest segment still on disk */
    size_t size;   /* bytes in it */
    bool spare;    /* a spare file is ready, named for spare_seq */
    uint32_t spare_seq;
};

static uint32_t fnv1a(uint32_t h, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 16777619u;
    return h;
}

static uint32_t record_sum(uint32_t seq, uint32_t len, const void *payload)
{
    uint32_t h = 2166136261u;

    h = fnv1a(h, &seq, sizeof(seq));
    h = fnv1a(h, &len, sizeof(len));
    return fnv1a(h, payload, len);
}

static void segment_path(const struct journal *j, uint32_t seq, char *out, size_t n)
{
    snprintf(out, n, "%s/ledger-%010u.journal", j->dir, seq);
}

static void spare_path(const struct journal *j, uint32_t seq, char *out, size_t n)
{
    snprintf(out, n, "%s/spare-%010u.journal", j->dir, seq);
}

/* Parses "<prefix><seq>.journal"; false when name is not one. */
static bool name_seq(const char *name, const char *prefix, uint32_t *seq)
{
    size_t n = strlen(prefix);
    unsigned long v;
    char *end;

    if (strncmp(name, prefix, n) != 0 || name[n] < '0' || name[n] > '9')
        return false;
    errno = 0;
    v = strtoul(name + n, &end, 10);
    if (errno || v > UINT32_MAX || strcmp(end, ".journal") != 0)
        return false;
    *seq = (uint32_t)v;
    return true;
}

/* Parses "ledger-<seq>.journal"; 0 when name is not a segment. */
static uint32_t segment_seq(const char *name)
{
    uint32_t seq;

    return name_seq(name, "ledger-", &seq) ? seq : 0;
}

/* Finds the spare (the one with the highest number if a crash left two;
 * the others go). */
static void find_spare(struct journal *j)
{
    DIR *d = opendir(j->dir);
    struct dirent *e;
    char path[4096];
    uint32_t seq;

    j->spare = false;
    if (!d)
        return;
    while ((e = readdir(d)))
        if (name_seq(e->d_name, "spare-", &seq)) {
            if (j->spare && seq != j->spare_seq) {
                spare_path(j, seq < j->spare_seq ? seq : j->spare_seq, path, sizeof(path));
                unlink(path);
            }
            if (!j->spare || seq > j->spare_seq)
                j->spare_seq = seq;
            j->spare = true;
        }
    closedir(d);
}

/* The first spare: SEGMENT_BYTES of zeros, on disk. A crash half-way
 * leaves a shorter spare, which works the same (its allocation is
 * completed when it becomes a segment). */
static int make_spare(struct journal *j)
{
    static const char zeros[65536];
    char path[4096];
    int fd;

    spare_path(j, 0, path, sizeof(path));
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return SX_EIO;
    for (size_t done = 0; done < SEGMENT_BYTES; ) {
        ssize_t k = write(fd, zeros, sizeof(zeros));

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            close(fd);
            unlink(path);
            return SX_EIO;
        }
        done += (size_t)k;
    }
    if (fdatasync(fd) != 0) {
        close(fd);
        unlink(path);
        return SX_EIO;
    }
    close(fd);
    j->spare = true;
    j->spare_seq = 0;
    return 0;
}

static int cmp_seq(const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

    return x < y ? -1 : x > y;
}

/* The segment numbers on disk, ascending. 0, or SX_EIO / SX_ENOMEM. */
static int list_segments(const struct journal *j, uint32_t **out, size_t *n)
{
    DIR *d = opendir(j->dir);
    struct dirent *e;
    uint32_t *v = NULL;
    size_t cap = 0;

    *out = NULL;
    *n = 0;
    if (!d) {
        SX_ERROR("metering", "opendir(\"%s\") failed: %s", j->dir, strerror(errno));
        return SX_EIO;
    }
    while ((e = readdir(d))) {
        uint32_t seq = segment_seq(e->d_name);

        if (!seq)
            continue;
        if (*n == cap) {
            uint32_t *nv = realloc(v, (cap ? cap * 2 : 16) * sizeof(*v));

            if (!nv) {
                free(v);
                closedir(d);
                return SX_ENOMEM;
            }
            v = nv;
            cap = cap ? cap * 2 : 16;
        }
        v[(*n)++] = seq;
    }
    closedir(d);
    if (*n)
        qsort(v, *n, sizeof(*v), cmp_seq);
    *out = v;
    return 0;
}

static int fsync_dir(const struct journal *j)
{
    int fd = open(j->dir, O_RDONLY | O_DIRECTORY);
    int rc = 0;

    if (fd < 0 || fsync(fd) != 0) {
        SX_ERROR("metering", "fsync of directory \"%s\" failed: %s", j->dir, strerror(errno));
        rc = SX_EIO;
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

/* The first SEGMENT_BYTES of a segment file, allocated and mapped; NULL
 * (logged once) where they cannot be. */
static unsigned char *map_segment(int fd, const char *path)
{
    static bool warned;
    void *p = MAP_FAILED;
    int rc = posix_fallocate(fd, 0, SEGMENT_BYTES);

    if (rc == 0)
        p = mmap(NULL, SEGMENT_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p != MAP_FAILED)
        return p;
    if (!warned)
        SX_WARN("metering", "ledger journal %s cannot be %s (%s); records are written one "
                "system call each", path, rc ? "allocated" : "mapped",
                strerror(rc ? rc : errno));
    warned = true;
    return NULL;
}

static void close_segment(struct journal *j)
{
    if (j->map)
        munmap(j->map, SEGMENT_BYTES);
    j->map = NULL;
    close(j->fd);
    j->fd = -1;
}

/* Starts segment seq (the previous one, if any, is closed). */
static int start_segment(struct journal *j, uint32_t seq)
{
    char path[4096];
    unsigned char *map;
    int fd;

    segment_path(j, seq, path, sizeof(path));
    if (j->spare) { /* written over from its start */
        char from[4096];

        spare_path(j, j->spare_seq, from, sizeof(from));
        j->spare = false;
        if (rename(from, path) != 0)
            SX_WARN("metering", "rename(\"%s\") failed: %s; starting an empty segment", from,
                    strerror(errno));
    }
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        SX_ERROR("metering", "open(\"%s\") failed: %s", path, strerror(errno));
        return SX_EIO;
    }
    map = map_segment(fd, path);
    if (j->sync_dir && fsync_dir(j) != 0) {
        if (map)
            munmap(map, SEGMENT_BYTES);
        close(fd);
        unlink(path);
        return SX_EIO;
    }
    /* Durable: rows still unsynced in the old segment reach the disk
     * before its descriptor goes (the syncer only syncs the current one). */
    if (j->fd >= 0) {
        if (j->sync_dir && fdatasync(j->fd) != 0)
            SX_ERROR("metering", "fdatasync of ledger journal segment %u failed: %s", j->seq,
                     strerror(errno));
        close_segment(j);
    }
    j->fd = fd;
    j->map = map;
    j->seq = seq;
    j->size = 0;
    return 0;
}

struct journal *sx_journal_open(const char *dir, bool durable, char *err, size_t errlen)
{
    struct journal *j = calloc(1, sizeof(*j));
    uint32_t *segs;
    size_t n;

    if (!j || !(j->dir = strdup(dir))) {
        free(j);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    j->fd = -1;
    j->sync_dir = durable;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create the ledger journal directory \"%s\": %s", dir,
                 strerror(errno));
        sx_journal_close(j);
        return NULL;
    }
    if (list_segments(j, &segs, &n) != 0) {
        snprintf(err, errlen, "cannot read the ledger journal directory \"%s\"", dir);
        sx_journal_close(j);
        return NULL;
    }
    j->seq = n ? segs[n - 1] : 0;
    j->oldest = n ? segs[0] : 1;
    free(segs);
    find_spare(j);
    if (j->spare && j->spare_seq > j->seq)
        j->seq = j->spare_seq; /* numbers continue above what it held */
    if (!j->spare && make_spare(j) != 0)
        SX_WARN("metering", "cannot prepare a ledger journal segment in \"%s\": %s; "
                "segments start empty", dir, strerror(errno));
    return j;
}

void sx_journal_close(struct journal *j)
{
    if (!j)
        return;
    if (j->fd >= 0)
        close_segment(j);
    free(j->dir);
    free(j);
}

/* Whether what follows the last record is what a reused file held before
 * (zeros, or a record of an earlier segment) rather than a torn write. */
static bool reused_tail(const unsigned char *p, size_t n, uint32_t seq)
{
    uint32_t h[4];

    if (n < HEADER)
        return false;
    memcpy(h, p, sizeof(h));
    return (h[0] == 0 && h[1] == 0 && h[2] == 0 && h[3] == 0) ||
           (h[0] == MAGIC && h[2] < seq);
}

/* Reads one segment and calls apply for each intact record. */
static int replay_segment(struct journal *j, uint32_t seq,
                          int (*apply)(void *ctx, const void *rec, size_t len), void *ctx,
                          size_t *records)
{
    char path[4096];
    unsigned char *buf = NULL;
    struct stat sb;
    size_t off = 0, have = 0;
    int fd, rc = 0;

    segment_path(j, seq, path, sizeof(path));
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || fstat(fd, &sb) != 0) {
        SX_ERROR("metering", "open(\"%s\") failed: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return SX_EIO;
    }
    if (sb.st_size > 0 && !(buf = malloc((size_t)sb.st_size))) {
        close(fd);
        return SX_ENOMEM;
    }
    while (have < (size_t)sb.st_size) {
        ssize_t k = read(fd, buf + have, (size_t)sb.st_size - have);

        if (k <= 0) {
            if (k < 0 && errno == EINTR)
                continue;
            break;
        }
        have += (size_t)k;
    }
    close(fd);

    while (rc == 0 && off + HEADER <= have) {
        uint32_t h[4];

        memcpy(h, buf + off, sizeof(h));
        if (h[0] != MAGIC || h[1] == 0 || h[1] > RECORD_MAX || h[2] != seq ||
            off + HEADER + h[1] > have || record_sum(seq, h[1], buf + off + HEADER) != h[3])
            break;
        rc = apply(ctx, buf + off + HEADER, h[1]);
        off += HEADER + h[1];
        (*records)++;
    }
    if (rc == 0 && off < have && !reused_tail(buf + off, have - off, seq))
        SX_WARN("metering", "ledger journal %s: %zu byte(s) after the last intact record "
                "ignored (a write cut short by a crash)", path, have - off);
    free(buf);
    return rc;
}

int sx_journal_replay(struct journal *j, int (*apply)(void *ctx, const void *rec, size_t len),
                      void *ctx, size_t *records)
{
    uint32_t *segs;
    size_t n;
    int rc;

    *records = 0;
    rc = list_segments(j, &segs, &n);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = replay_segment(j, segs[i], apply, ctx, records);
    free(segs);
    return rc;
}

int sx_journal_append(struct journal *j, const void *payload, size_t len, bool may_rotate,
                      uint32_t *seq)
{
    unsigned char rec[HEADER + RECORD_MAX];
    uint32_t h[4];
    size_t done = 0;
    int rc;

    if (len == 0 || len > RECORD_MAX)
        return SX_EINVAL;

    /* 1. A segment to write to: the first, or a new one once this is full
     * (not while someone syncs it: may_rotate false). */
    if (j->fd < 0 || (may_rotate && j->size + HEADER + len > SEGMENT_BYTES)) {
        rc = start_segment(j, j->seq + 1);
        if (rc)
            return rc;
    }

    /* 2. Header and payload at the end of the segment (one writer, under
     * the ledger's lock): copied into the mapping, or one pwrite(). */
    h[0] = MAGIC;
    h[1] = (uint32_t)len;
    h[2] = j->seq;
    h[3] = record_sum(j->seq, (uint32_t)len, payload);
    *seq = j->seq;
    if (j->map && j->size + HEADER + len <= SEGMENT_BYTES) {
        memcpy(j->map + j->size, h, HEADER);
        memcpy(j->map + j->size + HEADER, payload, len);
        j->size += HEADER + len;
        return 0;
    }
    memcpy(rec, h, HEADER);
    memcpy(rec + HEADER, payload, len);
    while (done < HEADER + len) {
        ssize_t k = pwrite(j->fd, rec + done, HEADER + len - done, (off_t)(j->size + done));

        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            SX_ERROR("metering", "write to the ledger journal (segment %u) failed: %s",
                     j->seq, k < 0 ? strerror(errno) : "nothing written");
            /* A torn record ends the segment for replay: start a new one
             * for whatever comes next. */
            j->size = SEGMENT_BYTES;
            return SX_EIO;
        }
        done += (size_t)k;
    }
    j->size += done;
    return 0;
}

int sx_journal_fd(const struct journal *j)
{
    return j->fd;
}

/* A segment whose rows are all in the store: the spare if there is none,
 * else removed. 0, or SX_EIO when it could not be removed (logged). */
static int retire(struct journal *j, uint32_t seq)
{
    char path[4096], to[4096];

    segment_path(j, seq, path, sizeof(path));
    if (!j->spare) {
        spare_path(j, seq, to, sizeof(to));
        if (rename(path, to) == 0) {
            j->spare = true;
            j->spare_seq = seq;
            return 0;
        }
    }
    if (unlink(path) != 0 && errno != ENOENT) {
        SX_WARN("metering", "unlink(\"%s\") failed: %s", path, strerror(errno));
        return SX_EIO;
    }
    return 0;
}

void sx_journal_release(struct journal *j, uint32_t below)
{
    if (below > j->seq)
        below = j->seq; /* the current segment stays */
    for (; j->oldest < below; j->oldest++)
        retire(j, j->oldest);
}

int sx_journal_reset(struct journal *j)
{
    uint32_t *segs;
    size_t n;
    int rc = list_segments(j, &segs, &n);

    if (j->fd >= 0) { /* the current segment goes too */
        close_segment(j);
        j->size = 0;
    }
    /* The newest file becomes the spare (numbering after a restart goes on
     * above it): an older spare makes room, and the newest is retired
     * first. */
    if (rc == 0 && n && j->spare && j->spare_seq < segs[n - 1]) {
        char path[4096];

        spare_path(j, j->spare_seq, path, sizeof(path));
        unlink(path);
        j->spare = false;
    }
    for (size_t i = n; rc == 0 && i-- > 0;)
        rc = retire(j, segs[i]);
    free(segs);
    if (rc == 0)
        j->oldest = j->seq + 1;
    return rc;
}
