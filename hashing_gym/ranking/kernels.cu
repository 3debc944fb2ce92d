
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
        cnt[d * T + t] += 1 + (is_relevant(l, lb, j) << 16);
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
        for (i64 j = runs[c]; j < end; ++j) mine[distance(q, xs, j) * T] += inc;
    }
#pragma unroll 5
    for (int b = 0; b < NBINS; ++b) out[((i64)seg * NBINS + b) * nq + i] = cnt[b * T + t];
}

// Per (query, bucket), over segments in order: base_pos / base_rel[(seg * NBINS + d) * nq + i] = items /
// relevant items of bucket d in earlier segments (when write_bases), and the totals over all segments,
// total[d * nq + i] and total_rel[d * nq + i]. One thread per (query, bucket): neighbours read neighbours.
extern "C" __global__ void prefixes(
    const int* __restrict__ packed, int nq, int nseg, int write_bases, int* __restrict__ base_pos,
    int* __restrict__ base_rel, int* __restrict__ total, int* __restrict__ total_rel) {
    const i64 at0 = (i64)blockIdx.x * blockDim.x + threadIdx.x;  // d * nq + i
    if (at0 >= (i64)nq * NBINS) return;
    int n = 0, r = 0;
    for (int seg = 0; seg < nseg; ++seg) {
        const i64 at = (i64)seg * NBINS * nq + at0;
        const int v = packed[at];
        if (write_bases) { base_pos[at] = n; base_rel[at] = r; }
        n += v & 0xFFFF;
        r += v >> 16;
    }
    total[at0] = n;
    total_rel[at0] = r;
}

// Pass 2: stable-order AP sums and hits at each cutoff, per segment: ap[(seg * NK + c) * nq + i], hits
// likewise. The counters are pass 1's again; a relevant item adds its bucket's starting position and hits
// in this segment, base_pos / base_rel (pass 1's layout: items / relevant items ranked before the
// segment's first item of the bucket), read from memory: with the queries sorted by label, the threads
// of a warp take this branch together, on the relevant items only.
extern "C" __global__ void __launch_bounds__(T) stable_sums(
    const u64* __restrict__ xq, const u64* __restrict__ xb, const i64* __restrict__ lq,
    const i64* __restrict__ lb, int nq, int nb, int seg_len, const int* __restrict__ base_pos,
    const int* __restrict__ base_rel, const int* __restrict__ ks, double* __restrict__ ap,
    int* __restrict__ hits) {
    __shared__ int cnt[NBINS * T];
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
    const int* pos0 = base_pos + (i64)seg * NBINS * nq + i;
    const int* rel0 = base_rel + (i64)seg * NBINS * nq + i;
    const i64 start = (i64)seg * seg_len, end = min(start + seg_len, (i64)nb);
#pragma unroll 4
    for (i64 j = start; j < end; ++j) {
        const int d = distance(q, xb, j);
        const int r = is_relevant(l, lb, j);
        const int v = cnt[d * T + t];
        cnt[d * T + t] = v + 1 + (r << 16);
        if (r) {
            const int position = __ldg(pos0 + (i64)d * nq) + (v & 0xFFFF) + 1;
            const double precision = quotient(__ldg(rel0 + (i64)d * nq) + (v >> 16) + 1, position);
#pragma unroll
            for (int c = 0; c < NK; ++c) {
                if (position <= k[c]) { sums[c] += precision; found[c] += 1; }
            }
        }
    }
#pragma unroll
    for (int c = 0; c < NK; ++c) {
        ap[((i64)seg * NK + c) * nq + i] = sums[c];
        hits[((i64)seg * NK + c) * nq + i] = found[c];
    }
}

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
