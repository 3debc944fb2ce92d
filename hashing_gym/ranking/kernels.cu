
typedef unsigned long long u64;
typedef long long i64;

__device__ __forceinline__ int distance(const u64 (&q)[W], const u64* __restrict__ xb, i64 j) {
    int d = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) d += __popcll(q[w] ^ __ldg(xb + j * W + w));
    return d;
}

__device__ __forceinline__ int is_relevant(const i64 (&l)[LW], const i64* __restrict__ lb, i64 j) {
#if MULTI
    i64 shared = 0;
#pragma unroll
    for (int w = 0; w < LW; ++w) shared |= l[w] & __ldg(lb + j * LW + w);
    return shared != 0;
#else
    return l[0] == __ldg(lb + j);
#endif
}

// hit / position in float64 without the division's slow path: a reciprocal estimate refined by two
// Newton steps on the quotient, within a few units in the last place of the rounded quotient.
__device__ __forceinline__ double quotient(int hit, int position) {
    const double p = (double)position, h = (double)hit;
    double inv;
    asm("rcp.approx.ftz.f64 %0, %1;" : "=d"(inv) : "d"(p));
    double q = h * inv;
    q = fma(fma(-q, p, h), inv, q);
    return fma(fma(-q, p, h), inv, q);
}

// A thread's start on its query: its column of the block's counters zeroed, its code's words loaded.
// Each thread owns its column, yet the kernels below add to it with shared atomics: one instruction for
// a load, add and store whose chain stalled the loop (pass 1 on an H200, N = 1M, 64 bits: 6.8 -> 5.7 ms).
__device__ __forceinline__ void start_query(int* cnt, int t, u64 (&q)[W], const u64* __restrict__ xq, int i) {
#pragma unroll 5
    for (int b = 0; b < NBINS; ++b) cnt[b * T + t] = 0;
#pragma unroll
    for (int w = 0; w < W; ++w) q[w] = xq[(i64)i * W + w];
}

// Packed per-segment histograms: out[(seg * NBINS + d) * nq + i] = items + (relevant << 16).
extern "C" __global__ void __launch_bounds__(T) histograms(
    const u64* __restrict__ xq, const u64* __restrict__ xb, const i64* __restrict__ lq,
    const i64* __restrict__ lb, int nq, int nb, int seg_len, int* __restrict__ out) {
    __shared__ int cnt[NBINS * T];
    const int t = threadIdx.x, i = blockIdx.x * T + t, seg = blockIdx.y;
    if (i >= nq) return;  // threads never synchronise: each owns its column of cnt
    u64 q[W];
    start_query(cnt, t, q, xq, i);
    i64 l[LW];
#pragma unroll
    for (int w = 0; w < LW; ++w) l[w] = lq[(i64)i * LW + w];
    const i64 start = (i64)seg * seg_len, end = min(start + seg_len, (i64)nb);
#pragma unroll 4
    for (i64 j = start; j < end; ++j) {
        const int d = distance(q, xb, j);
        atomicAdd(cnt + d * T + t, 1 + (is_relevant(l, lb, j) << 16));
    }
#pragma unroll 5
    for (int b = 0; b < NBINS; ++b) out[((i64)seg * NBINS + b) * nq + i] = cnt[b * T + t];
}

// Pass 1 over a database regrouped by (segment, class) (``ClassRuns``), for class ids: inside a run of
// one class an item's relevance to the query is a constant, so the inner loop loads no label and compares
// nothing (1.7x the speed of ``histograms`` on an H200, 64 bits). xs[run_start[seg * nc + c] ..
// run_start[seg * nc + c + 1]) are segment seg's items of class c; lq: the queries' classes as indices
// into the database's classes (-1: a class no item has). Writes what ``histograms`` writes.
extern "C" __global__ void __launch_bounds__(T) histograms_by_class(
    const u64* __restrict__ xq, const u64* __restrict__ xs, const int* __restrict__ lq,
    const int* __restrict__ run_start, int nq, int nc, int* __restrict__ out) {
    __shared__ int cnt[NBINS * T];
    const int t = threadIdx.x, i = blockIdx.x * T + t, seg = blockIdx.y;
    if (i >= nq) return;
    u64 q[W];
    start_query(cnt, t, q, xq, i);
    const int l = lq[i];
    int* mine = cnt + t;
    const int* runs = run_start + (i64)seg * nc;
    for (int c = 0; c < nc; ++c) {
        const int inc = c == l ? 1 + (1 << 16) : 1;
        const i64 end = runs[c + 1];
#pragma unroll 8
        for (i64 j = runs[c]; j < end; ++j) atomicAdd(mine + distance(q, xs, j) * T, inc);
    }
#pragma unroll 5
    for (int b = 0; b < NBINS; ++b) out[((i64)seg * NBINS + b) * nq + i] = cnt[b * T + t];
}

// Per (query, bucket), over segments in order: base[(seg * NBINS + d) * nq + i] = (items, relevant items)
// of bucket d in earlier segments (when write_bases), and the totals over all segments, total[d * nq + i]
// and total_rel[d * nq + i]. One thread per (query, bucket): neighbours read neighbours.
extern "C" __global__ void prefixes(
    const int* __restrict__ packed, int nq, int nseg, int write_bases, int2* __restrict__ base,
    int* __restrict__ total, int* __restrict__ total_rel) {
    const i64 at0 = (i64)blockIdx.x * blockDim.x + threadIdx.x;  // d * nq + i
    if (at0 >= (i64)nq * NBINS) return;
    int n = 0, r = 0;
    for (int seg = 0; seg < nseg; ++seg) {
        const i64 at = (i64)seg * NBINS * nq + at0;
        const int v = packed[at];
        if (write_bases) base[at] = make_int2(n, r);
        n += v & 0xFFFF;
        r += v >> 16;
    }
    total[at0] = n;
    total_rel[at0] = r;
}

// Pass 2: stable-order AP sums and hits at each cutoff, per segment: ap[(seg * NK + c) * nq + i], hits
// likewise. The counters are pass 1's again; a relevant item adds its bucket's starting position and hits
// in this segment, base (pass 1's layout: (items, relevant items) ranked before the segment's first item
// of the bucket), one 8-byte read from memory: with the queries sorted by label, the threads of a warp
// take this branch together, on the relevant items only.
//
// BITMAPS (class ids whose database has ``ClassRuns``): relevance is bit j % 32 of word j / 32 of the
// query's class's row of ``bitmaps`` (row nc: no item, for a class no item has), so 32 items cost one
// label load instead of 32. One-word codes (and class ids) are read two items per 16-byte load (the
// arrays start at 16-byte addresses; segments, at multiples of 32 items). On an H200 (N = 1M, Q = 10k, 64 bits, 10 classes): 15.8 ms
// before, 15.1-15.4 ms with labels, 13.9 ms with bitmaps.
template <bool BITMAPS>
__device__ __forceinline__ void stable_sums_body(
    const u64* __restrict__ xq, const u64* __restrict__ xb, const i64* __restrict__ lq,
    const i64* __restrict__ lb, const unsigned* __restrict__ bitmaps, const int* __restrict__ lq_class,
    int nc, int nq, int nb, int seg_len, const int2* __restrict__ base, const int* __restrict__ ks,
    double* __restrict__ ap, int* __restrict__ hits, int* cnt) {
    const int t = threadIdx.x, i = blockIdx.x * T + t, seg = blockIdx.y;
    if (i >= nq) return;
    u64 q[W];
    start_query(cnt, t, q, xq, i);
    i64 l[LW];
    int k[NK], found[NK];
    double sums[NK];
#pragma unroll
    for (int w = 0; w < LW; ++w) l[w] = lq[(i64)i * LW + w];
#pragma unroll
    for (int c = 0; c < NK; ++c) { k[c] = ks[c]; sums[c] = 0.0; found[c] = 0; }
    const int2* bases = base + (i64)seg * NBINS * nq + i;
    int* mine = cnt + t;
    auto visit = [&](int d, int relevant) {
        if (relevant) {
            const int v = atomicAdd(mine + d * T, 1 + (1 << 16));
            const int2 b = __ldg(bases + (i64)d * nq);
            const int position = b.x + (v & 0xFFFF) + 1;
            const double precision = quotient(b.y + (v >> 16) + 1, position);
#pragma unroll
            for (int c = 0; c < NK; ++c) {
                if (position <= k[c]) { sums[c] += precision; found[c] += 1; }
            }
        } else {
            atomicAdd(mine + d * T, 1);
        }
    };
    const i64 start = (i64)seg * seg_len, end = min(start + seg_len, (i64)nb);
    i64 j = start;
    if constexpr (BITMAPS) {  // start is a multiple of 32
        const int own = lq_class[i];
        const unsigned* words = bitmaps + (i64)(own < 0 ? nc : own) * ((nb + 31) / 32);
        for (; j + 32 <= end; j += 32) {
            const unsigned word = __ldg(words + (j >> 5));
            if constexpr (W == 1) {
                const ulonglong2* pairs = reinterpret_cast<const ulonglong2*>(xb) + (j >> 1);
#pragma unroll
                for (int p = 0; p < 16; ++p) {
                    const ulonglong2 x = __ldg(pairs + p);
                    visit(__popcll(q[0] ^ x.x), (word >> (2 * p)) & 1);
                    visit(__popcll(q[0] ^ x.y), (word >> (2 * p + 1)) & 1);
                }
            } else {
#pragma unroll 4
                for (int p = 0; p < 32; ++p) visit(distance(q, xb, j + p), (word >> p) & 1);
            }
        }
        if (j < end) {  // the database's last, partial word
            const unsigned word = __ldg(words + (j >> 5));
            for (int p = 0; j + p < end; ++p) visit(distance(q, xb, j + p), (word >> p) & 1);
        }
    } else {
        if constexpr (W == 1 && !MULTI) {  // two items per 16-byte load of codes and of labels
            const ulonglong2* pairs = reinterpret_cast<const ulonglong2*>(xb);
            const longlong2* labels = reinterpret_cast<const longlong2*>(lb);
            if ((j & 1) && j < end) { visit(distance(q, xb, j), is_relevant(l, lb, j)); ++j; }
#pragma unroll 2
            for (; j + 1 < end; j += 2) {
                const ulonglong2 x = __ldg(pairs + (j >> 1));
                const longlong2 y = __ldg(labels + (j >> 1));
                visit(__popcll(q[0] ^ x.x), y.x == l[0]);
                visit(__popcll(q[0] ^ x.y), y.y == l[0]);
            }
        }
#pragma unroll 4
        for (; j < end; ++j) visit(distance(q, xb, j), is_relevant(l, lb, j));
    }
#pragma unroll
    for (int c = 0; c < NK; ++c) {
        ap[((i64)seg * NK + c) * nq + i] = sums[c];
        hits[((i64)seg * NK + c) * nq + i] = found[c];
    }
}

#define STABLE_SUMS(NAME, BITMAPS)                                                                     \
    extern "C" __global__ void __launch_bounds__(T) NAME(                                              \
        const u64* __restrict__ xq, const u64* __restrict__ xb, const i64* __restrict__ lq,          \
        const i64* __restrict__ lb, const unsigned* __restrict__ bitmaps,                              \
        const int* __restrict__ lq_class, int nc, int nq, int nb, int seg_len,                        \
        const int2* __restrict__ base, const int* __restrict__ ks, double* __restrict__ ap,           \
        int* __restrict__ hits) {                                                                      \
        __shared__ int cnt[NBINS * T];                                                                 \
        stable_sums_body<BITMAPS>(xq, xb, lq, lb, bitmaps, lq_class, nc, nq, nb, seg_len, base, ks,   \
                                  ap, hits, cnt);                                                      \
    }
STABLE_SUMS(stable_sums, false)
STABLE_SUMS(stable_sums_bitmaps, true)

#ifdef OW
// Per-distance histograms of each query against its own database (xb: nq databases of nb items) or one
// shared database (shared_db), item exclude[i] left out of query i's list (exclude may be null):
// RankListHash-v0's reward, where every sub-env ranks its code against its own bank. One warp per query,
// OW warps a block: the lanes read 32 consecutive items at a time (coalesced: one thread per query would
// read 32 databases at once, a cache line each), each lane counts into its own column of the warp's
// counters (cnt[d][lane]: no two lanes share a bank), and the columns are summed by shuffles at the end.
// WT is the packed words' type (16, 32 or 64 bits); 32-bit counters, so a database may hold up to
// 2^31 - 1 items.
extern "C" __global__ void __launch_bounds__(32 * OW) own_histograms(
    const WT* __restrict__ xq, const WT* __restrict__ xb, const i64* __restrict__ lq,
    const i64* __restrict__ lb, const i64* __restrict__ exclude, int nq, int nb, int shared_db,
    i64* __restrict__ counts, i64* __restrict__ relevant) {
    __shared__ unsigned int cnt[OW][NBINS][32];
    __shared__ unsigned int rel[OW][NBINS][32];
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5;
    const i64 i = (i64)blockIdx.x * OW + w;
    if (i >= nq) return;  // the whole warp: warps never synchronise with one another
#pragma unroll 5
    for (int b = 0; b < NBINS; ++b) { cnt[w][b][lane] = 0; rel[w][b][lane] = 0; }
    WT q[W];
    i64 l[LW];
#pragma unroll
    for (int k = 0; k < W; ++k) q[k] = xq[i * W + k];
#pragma unroll
    for (int k = 0; k < LW; ++k) l[k] = lq[i * LW + k];
    const WT* __restrict__ base = xb + (shared_db ? 0 : i * (i64)nb * W);
    const i64 skip = exclude ? exclude[i] : -1;
#pragma unroll 2
    for (i64 j = lane; j < nb; j += 32) {
        int d = 0;
#pragma unroll
        for (int k = 0; k < W; ++k) {
            const WT x = (WT)(q[k] ^ base[j * W + k]);
            d += (sizeof(WT) == 8) ? __popcll((u64)x) : __popc((unsigned int)x);
        }
        if (j != skip) {
            cnt[w][d][lane] += 1;
            rel[w][d][lane] += is_relevant(l, lb, j);
        }
    }
    __syncwarp();
    for (int b = 0; b < NBINS; ++b) {
        unsigned int c = cnt[w][b][lane], r = rel[w][b][lane];
#pragma unroll
        for (int offset = 16; offset > 0; offset >>= 1) {
            c += __shfl_down_sync(0xffffffffu, c, offset);
            r += __shfl_down_sync(0xffffffffu, r, offset);
        }
        if (lane == 0) {
            counts[i * NBINS + b] = c;
            relevant[i * NBINS + b] = r;
        }
    }
}
#endif
