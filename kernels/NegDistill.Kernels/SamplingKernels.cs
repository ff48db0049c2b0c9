using ILGPU;
using ILGPU.Runtime;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// Next-token sampling over rows of logits (R,V). CPU twin and the math (temperature, top-k and top-p
/// thresholds defined by bisection, ties at the threshold kept, counter-based uniform, the scan,
/// log-probability at temperature 1): src/NegDistill.Core/Ops/Sampling.cs.
///
/// Every vocabulary sum a decision depends on follows a fixed order that does not depend on the group
/// size G (nor, for version 2, on the number of groups per row); max, arg-max and counts are exact in
/// any order. So the kernel and the twin pick the same token for the same fp32 weights (on ILGPU's CPU
/// accelerator exp is the host's MathF.Exp, so they pick the same token, full stop; CUDA's exp differs
/// in the last bits).
///
/// Version 1 (<see cref="SampleKernel"/>, twin <see cref="SamplingV1"/>): 256 virtual blocks of
/// L = ⌈V/256⌉ contiguous entries, thread t sums blocks t, t+G, ... — contiguous per thread, so a warp's
/// load touches 32 cache lines; top-k and top-p by bisection. Passes per row: max (1 read of V), Σexp
/// (1), weights to a (R,V) scratch (1 read, 1 write); then ~30 count passes (top-k) and 1 + ~30 mass
/// passes (top-p) over the scratch; the scan (1): 35 passes with top-p alone, 65 with both.
///
/// Version 2 (<see cref="SampleV2Kernel"/>, the default; twin <see cref="Sampling"/>): entry j
/// belongs to lane j mod 1024 and thread t sums lanes t, t+G, ..., so consecutive threads read
/// consecutive entries (coalesced); the 1024 lane sums are folded in the twin's fixed order. Max and
/// the first arg-max in one pass; Σexp, the weights, their mass and the first radix level in a second.
/// Top-k: a radix select on the weights' bit patterns (non-negative floats order like their bits, and
/// keys are &lt; 2^30), three levels of 10 bits with a 1024-bin count histogram each, exact. Top-p: the
/// same three levels on mass histograms (shared-memory double atomics, so only approximate) give a
/// candidate c; one pass computes mass(w ≥ c) and mass(w &gt; c) in the fixed order, and c is τ when the
/// first reaches p · mass(w ≥ τ_k) and the second does not (the fixed-order mass only grows with the
/// kept set: rounding is monotone). Otherwise the twin's bisection runs between the bounds that pass
/// established, so τ is always the twin's, bit for bit. Passes per row at V = 32,000: greedy 2; top-p
/// alone 6 (max, weights, 2 levels, check, scan) and 1 write; top-k and top-p 9 and 1 write (v1: 35
/// and 65). Napkin math at 64 rows: the first read of the 8 MB of logits comes from HBM, the rest
/// (≈ 80 MB with top-k and top-p) from L2, ≈ 10 µs at ~10 TB/s; about 150 barriers per row (v1: ~600).
/// Greedy rows, when few (decode at small batch), split over 16 groups each in three launches
/// (<see cref="SplitMaxKernel"/>), same order, same bits. Not built: the split for temperature &gt; 0 (the
/// radix levels would each need a launch and a combine); those rows keep one group each.
/// </summary>
public static class SamplingKernels
{
    public struct Args { public int V, L, TopK; public float Temperature, TopP; }

    /// <summary>Grid: R groups. logits (R,V) read only; w (R,V) scratch; tokens (R) out (−1 when the
    /// row's logits are NaN); logProbs (R) out; rowSeed (R,2) seed words lo, hi; rowCounter (R).</summary>
    public static void SampleKernel(ArrayView<float> logits, ArrayView<float> w, ArrayView<int> tokens, ArrayView<float> logProbs,
        ArrayView<int> rowSeed, ArrayView<int> rowCounter, Args a)
    {
        var shf = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        var shd = SharedMemory.Allocate<double>(SamplingV1.Blocks);
        var shi = SharedMemory.Allocate<int>(GroupReduce.MaxGroup);
        int tid = Group.IdxX, g = Group.DimX, v = a.V, L = a.L;
        long row = Grid.IdxX, o = row * v;

        float max = float.NegativeInfinity;
        for (int j = tid; j < v; j += g) { float z = logits[o + j]; if (z > max) max = z; }
        max = GroupReduce.Max(max, shf);

        // Σ exp(z − max) at temperature 1, blocked (for the log-probability)
        for (int b = tid; b < SamplingV1.Blocks; b += g)
        {
            double acc = 0;
            for (int j = b * L, e = Math.Min(v, j + L); j < e; j++) acc += MathF.Exp(logits[o + j] - max);
            shd[b] = acc;
        }
        double sumExp = Tree(shd);

        int token = -1;
        if (a.Temperature <= 0f)
        {
            int first = int.MaxValue;
            for (int j = tid; j < v; j += g) if (logits[o + j] == max && j < first) first = j;
            first = MinInt(first, shi);
            token = first == int.MaxValue ? -1 : first;
        }
        else
        {
            for (int j = tid; j < v; j += g) w[o + j] = MathF.Exp((logits[o + j] - max) / a.Temperature);
            Group.Barrier();
            uint lo = 0;                                                    // bits of τ; count(w ≥ 0) = V
            uint oneBits = Interop.FloatAsInt(1f);
            if (a.TopK > 0 && a.TopK < v)
            {
                uint hi = oneBits + 1;
                while (hi - lo > 1)
                {
                    uint mid = lo + (hi - lo) / 2;
                    float tau = Interop.IntAsFloat(mid);
                    float count = 0f;                                       // exact: counts < 2^24
                    for (int j = tid; j < v; j += g) if (w[o + j] >= tau) count += 1f;
                    if (GroupReduce.Sum(count, shf) >= a.TopK) lo = mid; else hi = mid;
                }
            }
            if (a.TopP > 0f && a.TopP < 1f)
            {
                double target = a.TopP * Mass(w, o, v, L, Interop.IntAsFloat(lo), shd);
                uint hi = oneBits + 1;
                while (hi - lo > 1)
                {
                    uint mid = lo + (hi - lo) / 2;
                    if (Mass(w, o, v, L, Interop.IntAsFloat(mid), shd) >= target) lo = mid; else hi = mid;
                }
            }
            float keep = Interop.IntAsFloat(lo);
            for (int b = tid; b < SamplingV1.Blocks; b += g)
            {
                double acc = 0;
                for (int j = b * L, e = Math.Min(v, j + L); j < e; j++) { float x = w[o + j]; if (x >= keep) acc += x; }
                shd[b] = acc;
            }
            Group.Barrier();
            if (tid == 0)
            {
                double total = 0;
                for (int b = 0; b < SamplingV1.Blocks; b++) total += shd[b];
                ulong seed = (uint)rowSeed[2 * row] | ((ulong)(uint)rowSeed[2 * row + 1] << 32);
                double x = CounterRng.Uniform(seed, (uint)rowCounter[row]) * total, prefix = 0;
                for (int b = 0; b < SamplingV1.Blocks && token < 0; b++)
                {
                    if (prefix + shd[b] > x)
                    {
                        double acc = 0;
                        for (int j = b * L, e = Math.Min(v, j + L); j < e; j++)
                        {
                            float wj = w[o + j];
                            if (!(wj >= keep)) continue;
                            acc += wj;
                            if (prefix + acc > x) { token = j; break; }
                        }
                    }
                    prefix += shd[b];
                }
            }
        }
        if (tid == 0)
        {
            tokens[row] = token;
            logProbs[row] = token < 0 ? float.NaN : (logits[o + token] - max) - MathF.Log((float)sumExp);
        }
    }

    /// <summary>Σ w_j over w_j ≥ τ of one row in the twin's blocked order. Every thread calls it.</summary>
    static double Mass(ArrayView<float> w, long o, int v, int L, float tau, ArrayView<double> shd)
    {
        for (int b = Group.IdxX; b < SamplingV1.Blocks; b += Group.DimX)
        {
            double acc = 0;
            for (int j = b * L, e = Math.Min(v, j + L); j < e; j++) { float x = w[o + j]; if (x >= tau) acc += x; }
            shd[b] = acc;
        }
        return Tree(shd);
    }

    /// <summary>The twin's pairwise tree over the 256 block sums in shared memory (level s adds i + s
    /// into i for i &lt; s), the same order for every group size. Every thread calls it.</summary>
    static double Tree(ArrayView<double> shd)
    {
        Group.Barrier();
        for (int s = SamplingV1.Blocks / 2; s > 0; s >>= 1)
        {
            for (int i = Group.IdxX; i < s; i += Group.DimX) shd[i] += shd[i + s];
            Group.Barrier();
        }
        double r = shd[0];
        Group.Barrier();
        return r;
    }

    /// <summary>After a barrier, the group's (max, lowest index among equal maxima) of every thread's pair in
    /// shf/shi into shf[0]/shi[0], by a pairwise tree. Every thread calls it.</summary>
    static void ArgMaxTree(ArrayView<float> shf, ArrayView<int> shi)
    {
        int tid = Group.IdxX;
        Group.Barrier();
        for (int s = Group.DimX / 2; s > 0; s >>= 1)
        {
            if (tid < s)
            {
                float m2 = shf[tid + s]; int i2 = shi[tid + s];
                if (m2 > shf[tid] || (m2 == shf[tid] && i2 < shi[tid])) { shf[tid] = m2; shi[tid] = i2; }
            }
            Group.Barrier();
        }
    }

    static int MinInt(int v, ArrayView<int> scratch)
    {
        int tid = Group.IdxX;
        scratch[tid] = v;
        Group.Barrier();
        for (int s = Group.DimX / 2; s > 0; s >>= 1)
        {
            if (tid < s && scratch[tid + s] < scratch[tid]) scratch[tid] = scratch[tid + s];
            Group.Barrier();
        }
        int r = scratch[0];
        Group.Barrier();
        return r;
    }

    // ---- version 2 ----------------------------------------------------------------------------------

    /// <summary>Bins of one radix level: 10 bits of the weight's key.</summary>
    public const int Bins = 1024;

    /// <summary>Nudge: added to top-p's radix candidate (in bits) before its check, so tests can drive the
    /// bisection fallback; 0 in the engine.</summary>
    public struct ArgsV2 { public int V, TopK, Nudge; public float Temperature, TopP; }

    /// <summary>Grid: R groups; group size a power of two ≤ 256. Arguments as <see cref="SampleKernel"/>.</summary>
    public static void SampleV2Kernel(ArrayView<float> logits, ArrayView<float> w, ArrayView<int> tokens, ArrayView<float> logProbs,
        ArrayView<int> rowSeed, ArrayView<int> rowCounter, ArgsV2 a)
    {
        var lanA = SharedMemory.Allocate<double>(PaddedLanes);
        var lanB = SharedMemory.Allocate<double>(PaddedLanes);
        var hist = SharedMemory.Allocate<double>(Bins);
        var scan = SharedMemory.Allocate<double>(GroupReduce.MaxGroup + 1);
        var chunk = SharedMemory.Allocate<double>(Sampling.Chunks);
        var shf = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        var shi = SharedMemory.Allocate<int>(GroupReduce.MaxGroup);
        int tid = Group.IdxX, g = Group.DimX, v = a.V;
        long row = Grid.IdxX, o = row * v;
        bool sample = a.Temperature > 0f, topK = a.TopK > 0 && a.TopK < v, topP = a.TopP > 0f && a.TopP < 1f;

        // pass 1: the maximum and the lowest index holding it (exact in any order)
        float max = float.NegativeInfinity;
        int arg = int.MaxValue;
        for (int j = tid; j < v; j += g)
        {
            float z = logits[o + j];
            if (z > max || (z == max && arg == int.MaxValue)) { max = z; arg = j; }
        }
        shf[tid] = max; shi[tid] = arg;
        for (int i = tid; i < Bins; i += g) hist[i] = 0;
        ArgMaxTree(shf, shi);
        max = shf[0]; arg = shi[0];
        Group.Barrier();

        // pass 2: Σexp at temperature 1 by lanes; when sampling also the weights, their mass (w ≥ 0, so
        // not NaN) by lanes and the first radix level of top-k (counts) or else top-p (masses)
        for (int p = tid; p < Sampling.Lanes; p += g)
        {
            double se = 0, m = 0;
            for (int j = p; j < v; j += Sampling.Lanes)
            {
                float d = logits[o + j] - max;
                se += MathF.Exp(d);
                if (sample)
                {
                    float x = MathF.Exp(d / a.Temperature);
                    w[o + j] = x;
                    if (x >= 0f)
                    {
                        m += x;
                        int bin = (int)(Interop.FloatAsInt(x) >> 20);
                        if (topK) Atomic.Add(ref hist[bin], 1.0);
                        else if (topP) Atomic.Add(ref hist[bin], (double)x);
                    }
                }
            }
            lanA[Pad(p)] = se; lanB[Pad(p)] = m;
        }
        double sumExp = Fold(lanA, chunk);

        int token = -1;
        if (!sample) token = arg == int.MaxValue ? -1 : arg;
        else
        {
            uint oneBits = Interop.FloatAsInt(1f), kb = 0;                 // kb: bits of τ_k (0: top-k off)
            if (topK)
            {
                var pick = SelectBin(hist, a.TopK, scan, shi);
                if (pick.Found)                                             // else fewer than k weights are not NaN: τ_k = 0
                {
                    uint prefix = (uint)pick.Bin;
                    double need = a.TopK - pick.Above;
                    for (int shift = 10; shift >= 0; shift -= 10)
                    {
                        ClearBins(hist);
                        for (int j = tid; j < v; j += g)
                        {
                            float x = w[o + j]; uint key = Interop.FloatAsInt(x);
                            if (x >= 0f && key >> (shift + 10) == prefix) Atomic.Add(ref hist[(int)((key >> shift) & (Bins - 1))], 1.0);
                        }
                        pick = SelectBin(hist, need, scan, shi);
                        prefix = prefix << 10 | (uint)pick.Bin;
                        need -= pick.Above;
                    }
                    kb = prefix;
                }
            }
            if (topP)
            {
                float tauK = Interop.IntAsFloat(kb);
                if (topK)
                {
                    ClearBins(hist);
                    for (int p = tid; p < Sampling.Lanes; p += g)
                    {
                        double m = 0;
                        for (int j = p; j < v; j += Sampling.Lanes)
                        {
                            float x = w[o + j];
                            if (x >= tauK) { m += x; Atomic.Add(ref hist[(int)(Interop.FloatAsInt(x) >> 20)], (double)x); }
                        }
                        lanB[Pad(p)] = m;
                    }
                }
                double target = a.TopP * Fold(lanB, chunk);
                var pick = SelectBin(hist, target, scan, shi);
                uint prefix = (uint)pick.Bin;
                double need = target - pick.Above;
                for (int shift = 10; shift >= 0; shift -= 10)
                {
                    ClearBins(hist);
                    for (int j = tid; j < v; j += g)
                    {
                        float x = w[o + j]; uint key = Interop.FloatAsInt(x);
                        if (x >= tauK && key >> (shift + 10) == prefix) Atomic.Add(ref hist[(int)((key >> shift) & (Bins - 1))], (double)x);
                    }
                    pick = SelectBin(hist, need, scan, shi);
                    prefix = prefix << 10 | (uint)pick.Bin;
                    need -= pick.Above;
                }
                long nudged = (long)prefix + a.Nudge;
                uint cb = nudged < kb ? kb : nudged > oneBits ? oneBits : (uint)nudged;
                float c = Interop.IntAsFloat(cb);
                for (int p = tid; p < Sampling.Lanes; p += g)
                {
                    double ge = 0, gt = 0;
                    for (int j = p; j < v; j += Sampling.Lanes)
                    {
                        float x = w[o + j];
                        if (x >= c) { ge += x; if (x > c) gt += x; }
                    }
                    lanA[Pad(p)] = ge; lanB[Pad(p)] = gt;
                }
                double mGe = Fold(lanA, chunk), mGt = Fold(lanB, chunk);   // mass(w > c) = the twin's mass at bits cb + 1
                uint lo, hi;
                if (mGe >= target && (cb == oneBits || !(mGt >= target))) { lo = cb; hi = cb + 1; }
                else if (!(mGe >= target)) { lo = kb; hi = cb; }
                else { lo = cb + 1; hi = oneBits + 1; }
                while (hi - lo > 1)                                         // the twin's bisection, inside the bracket
                {
                    uint mid = lo + (hi - lo) / 2;
                    if (MassV2(w, o, v, Interop.IntAsFloat(mid), lanA, chunk) >= target) lo = mid; else hi = mid;
                }
                kb = lo;
            }
            float keep = Interop.IntAsFloat(kb);
            double total = MassV2(w, o, v, keep, lanA, chunk);              // leaves the lane and chunk sums in place
            if (tid == 0)
            {
                ulong seed = (uint)rowSeed[2 * row] | ((ulong)(uint)rowSeed[2 * row + 1] << 32);
                token = ScanV2(w, o, v, keep, lanA, chunk, CounterRng.Uniform(seed, (uint)rowCounter[row]) * total);
            }
        }
        if (tid == 0)
        {
            tokens[row] = token;
            logProbs[row] = token < 0 ? float.NaN : (logits[o + token] - max) - MathF.Log((float)sumExp);
        }
    }

    /// <summary>Lane sums live at p + p/32 in shared memory: one pad per chunk of 32, so the 32 threads of
    /// <see cref="Fold"/> (thread c reads its chunk's lanes in turn) hit different banks.</summary>
    const int PaddedLanes = Sampling.Lanes + Sampling.Chunks;
    static int Pad(int p) => p + (p >> 5);

    /// <summary>The twin's <see cref="Sampling.Fold"/>: thread c sums chunk c's 32 lanes in order, then every
    /// thread sums the 32 chunk sums in order (the same value everywhere). Every thread calls it.</summary>
    static double Fold(ArrayView<double> lanes, ArrayView<double> chunk)
    {
        Group.Barrier();
        for (int c = Group.IdxX; c < Sampling.Chunks; c += Group.DimX)
        {
            double s = 0;
            for (int i = 0; i < Sampling.ChunkLanes; i++) s += lanes[Pad(c * Sampling.ChunkLanes + i)];
            chunk[c] = s;
        }
        Group.Barrier();
        double total = 0;
        for (int c = 0; c < Sampling.Chunks; c++) total += chunk[c];
        return total;
    }

    /// <summary>Σ w_j over w_j ≥ τ of one row in the twin's order. Every thread calls it.</summary>
    static double MassV2(ArrayView<float> w, long o, int v, float tau, ArrayView<double> lanes, ArrayView<double> chunk)
    {
        for (int p = Group.IdxX; p < Sampling.Lanes; p += Group.DimX)
        {
            double m = 0;
            for (int j = p; j < v; j += Sampling.Lanes) { float x = w[o + j]; if (x >= tau) m += x; }
            lanes[Pad(p)] = m;
        }
        return Fold(lanes, chunk);
    }

    /// <summary>The twin's <see cref="Sampling.Scan"/> over the lane and chunk sums <see cref="MassV2"/> left.</summary>
    static int ScanV2(ArrayView<float> w, long o, int v, float keep, ArrayView<double> lanes, ArrayView<double> chunk, double x)
    {
        double prefix = 0;
        for (int c = 0; c < Sampling.Chunks; c++)
        {
            if (prefix + chunk[c] > x)
            {
                double acc = 0;
                for (int p = c * Sampling.ChunkLanes; p < (c + 1) * Sampling.ChunkLanes; p++)
                {
                    double before = acc;
                    acc += lanes[Pad(p)];
                    if (!(prefix + acc > x)) continue;
                    int last = -1;
                    for (int j = p; j < v; j += Sampling.Lanes)
                    {
                        float wj = w[o + j];
                        if (!(wj >= keep) || !(wj > 0f)) continue;
                        last = j;
                        before += wj;
                        if (prefix + before > x) return j;
                    }
                    return last;
                }
            }
            prefix += chunk[c];
        }
        return -1;
    }

    static void ClearBins(ArrayView<double> hist)
    {
        for (int i = Group.IdxX; i < Bins; i += Group.DimX) hist[i] = 0;
        Group.Barrier();
    }

    struct Pick { public int Bin; public double Above; public bool Found; }

    /// <summary>One radix level: the highest bin d whose suffix Σ_{d' ≥ d} hist reaches <paramref name="need"/>,
    /// and Above = Σ_{d' &gt; d} hist. Thread t owns bins [t·B/G, (t+1)·B/G); their sums are suffix-scanned
    /// across the group (exact for counts; for masses any error is caught by top-p's check). Not found:
    /// bin 0. Every thread calls it; it starts with a barrier, so hist may be filled just before.</summary>
    static Pick SelectBin(ArrayView<double> hist, double need, ArrayView<double> scan, ArrayView<int> shi)
    {
        int tid = Group.IdxX, g = Group.DimX, per = Bins / g, b0 = tid * per;
        if (tid == 0) shi[0] = -1;
        Group.Barrier();
        double s = 0;
        for (int i = 0; i < per; i++) s += hist[b0 + i];
        scan[tid] = s;
        Group.Barrier();
        for (int off = 1; off < g; off <<= 1)
        {
            double x = scan[tid] + (tid + off < g ? scan[tid + off] : 0.0);
            Group.Barrier();
            scan[tid] = x;
            Group.Barrier();
        }
        if (scan[tid] >= need) Atomic.Max(ref shi[0], tid);
        Group.Barrier();
        int tc = shi[0];
        if (tid == (tc < 0 ? 0 : tc))
        {
            int bin = 0;
            double above = 0;
            if (tc >= 0)
            {
                double run = tid + 1 < g ? scan[tid + 1] : 0.0;
                for (int i = per - 1; i >= 0; i--)
                {
                    double h = hist[b0 + i];
                    if (run + h >= need || i == 0) { bin = b0 + i; above = run; break; }
                    run += h;
                }
            }
            shi[1] = bin; scan[g] = above;
        }
        Group.Barrier();
        return new Pick { Bin = shi[1], Above = scan[g], Found = tc >= 0 };
    }

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, ArrayView<int>, Args> _k =
            acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, ArrayView<int>, Args>(SampleKernel);
        MemoryBuffer1D<float, Stride1D.Dense>? _w;

        public void Sample(ArrayView<float> logits, ArrayView<int> tokens, ArrayView<float> logProbs, ArrayView<int> rowSeed, ArrayView<int> rowCounter,
            int n, int v, float temperature, int topK, float topP)
        {
            long need = (long)n * v;
            if (_w == null || _w.Length < need)
            {
                acc.Synchronize();                             // a launch in flight may still use the old scratch
                _w?.Dispose();
                _w = acc.Allocate1D<float>(need);
            }
            _k(new KernelConfig(n, group), logits, _w.View, tokens, logProbs, rowSeed, rowCounter,
                new Args { V = v, L = SamplingV1.BlockLength(v), TopK = topK, Temperature = temperature, TopP = topP });
        }
    }

    // ---- version 2, greedy with a row split across groups (few rows) ---------------------------------

    /// <summary>Greedy rows split over S groups each (S divides 1024): group (r, s) owns lanes
    /// [s·1024/S, (s+1)·1024/S) of row r, so a row's reads spread over S multiprocessors; the twin's
    /// order is kept because every lane is still summed by one thread in index order. Three launches:
    /// the maximum and its lowest index per part; the exp lane sums after combining the parts' maxima
    /// (exact in any order); the <see cref="Fold"/> of the 1024 lanes, the token and its log-probability.
    /// Grid: R·S groups. part (R,S) out: the parts' maxima and their lowest indices.</summary>
    public static void SplitMaxKernel(ArrayView<float> logits, ArrayView<float> partMax, ArrayView<int> partArg, int v, int parts)
    {
        var shf = SharedMemory.Allocate<float>(GroupReduce.MaxGroup);
        var shi = SharedMemory.Allocate<int>(GroupReduce.MaxGroup);
        int tid = Group.IdxX, g = Group.DimX, part = Grid.IdxX % parts, width = Sampling.Lanes / parts;
        long row = Grid.IdxX / parts, o = row * v;
        float max = float.NegativeInfinity;
        int arg = int.MaxValue;
        for (int p = part * width + tid; p < (part + 1) * width; p += g)
            for (int j = p; j < v; j += Sampling.Lanes)
            {
                float z = logits[o + j];
                if (z > max || (z == max && j < arg)) { max = z; arg = j; }
            }
        shf[tid] = max; shi[tid] = arg;
        ArgMaxTree(shf, shi);
        if (tid == 0) { partMax[row * parts + part] = shf[0]; partArg[row * parts + part] = shi[0]; }
    }

    /// <summary>Grid: R·S groups. lanes (R,1024) out: Σ exp(z − max) of each lane of the group's part.</summary>
    public static void SplitExpKernel(ArrayView<float> logits, ArrayView<float> partMax, ArrayView<int> partArg, ArrayView<double> lanes, int v, int parts)
    {
        int tid = Group.IdxX, g = Group.DimX, part = Grid.IdxX % parts, width = Sampling.Lanes / parts;
        long row = Grid.IdxX / parts, o = row * v;
        float max = float.NegativeInfinity;
        for (int i = 0; i < parts; i++) { float m = partMax[row * parts + i]; if (m > max) max = m; }
        for (int p = part * width + tid; p < (part + 1) * width; p += g)
        {
            double se = 0;
            for (int j = p; j < v; j += Sampling.Lanes) se += MathF.Exp(logits[o + j] - max);
            lanes[row * Sampling.Lanes + p] = se;
        }
    }

    /// <summary>Grid: R groups (any size). The row's maximum and lowest arg-max from the parts, Σexp by the
    /// twin's <see cref="Sampling.Fold"/>, and the token (−1 when every logit is NaN) with its log-probability.</summary>
    public static void SplitFinishKernel(ArrayView<float> logits, ArrayView<float> partMax, ArrayView<int> partArg, ArrayView<double> lanes,
        ArrayView<int> tokens, ArrayView<float> logProbs, int v, int parts)
    {
        var chunk = SharedMemory.Allocate<double>(Sampling.Chunks);
        int tid = Group.IdxX;
        long row = Grid.IdxX, l0 = row * Sampling.Lanes;
        for (int c = tid; c < Sampling.Chunks; c += Group.DimX)
        {
            double s = 0;
            for (int i = 0; i < Sampling.ChunkLanes; i++) s += lanes[l0 + c * Sampling.ChunkLanes + i];
            chunk[c] = s;
        }
        Group.Barrier();
        if (tid == 0)
        {
            double sumExp = 0;
            for (int c = 0; c < Sampling.Chunks; c++) sumExp += chunk[c];
            float max = float.NegativeInfinity;
            int arg = int.MaxValue;
            for (int i = 0; i < parts; i++)
            {
                float m = partMax[row * parts + i]; int a = partArg[row * parts + i];
                if (m > max || (m == max && a < arg)) { max = m; arg = a; }
            }
            int token = arg == int.MaxValue ? -1 : arg;
            tokens[row] = token;
            logProbs[row] = token < 0 ? float.NaN : (logits[row * v + token] - max) - MathF.Log((float)sumExp);
        }
    }

    /// <summary>Version 2's launcher: group size a power of two in [4, 256] (it must divide the 1024 bins).</summary>
    public sealed class LauncherV2
    {
        readonly Accelerator _acc;
        readonly int _group;
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArgsV2> _k;
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int> _max;
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<double>, int, int> _exp;
        readonly Action<KernelConfig, ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<double>, ArrayView<int>, ArrayView<float>, int, int> _finish;
        MemoryBuffer1D<float, Stride1D.Dense>? _w, _part;
        MemoryBuffer1D<int, Stride1D.Dense>? _partArg;
        MemoryBuffer1D<double, Stride1D.Dense>? _lanes;

        /// <summary>Greedy rows split this many ways (16 groups of 64 threads: one lane per thread).</summary>
        public const int SplitParts = 16, SplitGroup = 64;

        public LauncherV2(Accelerator acc, int group)
        {
            if (group < 4 || group > GroupReduce.MaxGroup || (group & (group - 1)) != 0)
                throw new ArgumentOutOfRangeException(nameof(group), group, "sampling v2 needs a power of two in [4, 256]");
            _acc = acc; _group = group;
            _k = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<float>, ArrayView<int>, ArrayView<int>, ArgsV2>(SampleV2Kernel);
            _max = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, int, int>(SplitMaxKernel);
            _exp = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<double>, int, int>(SplitExpKernel);
            _finish = acc.LoadStreamKernel<ArrayView<float>, ArrayView<float>, ArrayView<int>, ArrayView<double>, ArrayView<int>, ArrayView<float>, int, int>(SplitFinishKernel);
        }

        /// <summary><paramref name="split"/>: groups per row for greedy rows (a divisor of 1024; 1: one group
        /// per row); −1 chooses: <see cref="SplitParts"/> when the greedy rows would fill at most a quarter of
        /// the multiprocessors with one group each (a guess until gpu-check times both at 1 and 64 rows).</summary>
        public void Sample(ArrayView<float> logits, ArrayView<int> tokens, ArrayView<float> logProbs, ArrayView<int> rowSeed, ArrayView<int> rowCounter,
            int n, int v, float temperature, int topK, float topP, int nudge = 0, int split = -1)
        {
            if (split < 0) split = temperature <= 0f && 4 * n <= _acc.NumMultiprocessors ? SplitParts : 1;
            if (temperature <= 0f && split > 1)
            {
                if (split > Sampling.Lanes || Sampling.Lanes % split != 0) throw new ArgumentOutOfRangeException(nameof(split), split, "groups per row must divide 1024");
                if (_part == null || _part.Length < (long)n * split || _partArg!.Length < (long)n * split) { _acc.Synchronize(); _part?.Dispose(); _partArg?.Dispose(); _part = _acc.Allocate1D<float>((long)n * split); _partArg = _acc.Allocate1D<int>((long)n * split); }
                if (_lanes == null || _lanes.Length < (long)n * Sampling.Lanes) { _acc.Synchronize(); _lanes?.Dispose(); _lanes = _acc.Allocate1D<double>((long)n * Sampling.Lanes); }
                int sg = Math.Min(_group, SplitGroup);
                _max(new KernelConfig(n * split, sg), logits, _part.View, _partArg.View, v, split);
                _exp(new KernelConfig(n * split, sg), logits, _part.View, _partArg.View, _lanes.View, v, split);
                _finish(new KernelConfig(n, Math.Min(_group, Sampling.Chunks)), logits, _part.View, _partArg.View, _lanes.View, tokens, logProbs, v, split);
                return;
            }
            long need = (long)n * v;
            if (_w == null || _w.Length < need)
            {
                _acc.Synchronize();                            // a launch in flight may still use the old scratch
                _w?.Dispose();
                _w = _acc.Allocate1D<float>(need);
            }
            _k(new KernelConfig(n, _group), logits, _w.View, tokens, logProbs, rowSeed, rowCounter,
                new ArgsV2 { V = v, TopK = topK, Nudge = nudge, Temperature = temperature, TopP = topP });
        }
    }
}
