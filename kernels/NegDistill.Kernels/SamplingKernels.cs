using ILGPU;
using ILGPU.Runtime;
using NegDistill.Ops;
using NegDistill.Runtime;

namespace NegDistill.Kernels;

/// <summary>
/// Next-token sampling, one group per row of logits (R,V). CPU twin and the math (temperature,
/// top-k and top-p by bisection on a weight threshold, ties at the threshold kept, counter-based
/// uniform, blocked scan, log-probability at temperature 1): src/NegDistill.Core/Ops/Sampling.cs.
///
/// Every vocabulary sum a decision depends on follows the twin's fixed order, which does not depend
/// on the group size G: the row is cut into 256 virtual blocks of L = ⌈V/256⌉ contiguous entries;
/// thread t sums blocks t, t+G, ... in index order (double) into shared memory, and the 256 block
/// sums are combined by the same pairwise tree as the twin (<see cref="Tree"/>), or, for the final
/// scan, by thread 0 in block order. Max and counts are exact in any order. So the kernel and the
/// twin pick the same token for the same fp32 weights (on ILGPU's CPU accelerator exp is the host's
/// MathF.Exp, so they pick the same token, full stop; CUDA's exp differs in the last bits).
///
/// Passes per row: max (1 read of V), Σexp (1), weights to a (R,V) scratch (1 read, 1 write); then
/// only with top-k / top-p, ~30 count passes and ~30 mass passes over the scratch; the scan (1).
/// Napkin math at V = 32,000 and 64 rows: the logits are 8 MB; the ~64 bisection passes re-read the
/// 8 MB scratch from L2 (50 MB on H100), ≈ 0.5 GB at ~10 TB/s of L2 bandwidth ≈ 50 µs, plus
/// 64 tree reductions of 8 levels ≈ 512 barriers per row — tens of µs. Per decode step that is
/// ~1–2 % of the 4 ms weight read of LLaMA-7b (see KvCacheKernels), so sampling stays off the
/// critical path; a radix select would cut the passes to ~4 if it ever mattered. Block reads are
/// contiguous per thread, not coalesced across threads; rows are cache-resident after pass 1.
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
        var shd = SharedMemory.Allocate<double>(Sampling.Blocks);
        var shi = SharedMemory.Allocate<int>(GroupReduce.MaxGroup);
        int tid = Group.IdxX, g = Group.DimX, v = a.V, L = a.L;
        long row = Grid.IdxX, o = row * v;

        float max = float.NegativeInfinity;
        for (int j = tid; j < v; j += g) { float z = logits[o + j]; if (z > max) max = z; }
        max = GroupReduce.Max(max, shf);

        // Σ exp(z − max) at temperature 1, blocked (for the log-probability)
        for (int b = tid; b < Sampling.Blocks; b += g)
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
            for (int b = tid; b < Sampling.Blocks; b += g)
            {
                double acc = 0;
                for (int j = b * L, e = Math.Min(v, j + L); j < e; j++) { float x = w[o + j]; if (x >= keep) acc += x; }
                shd[b] = acc;
            }
            Group.Barrier();
            if (tid == 0)
            {
                double total = 0;
                for (int b = 0; b < Sampling.Blocks; b++) total += shd[b];
                ulong seed = (uint)rowSeed[2 * row] | ((ulong)(uint)rowSeed[2 * row + 1] << 32);
                double x = CounterRng.Uniform(seed, (uint)rowCounter[row]) * total, prefix = 0;
                for (int b = 0; b < Sampling.Blocks && token < 0; b++)
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
        for (int b = Group.IdxX; b < Sampling.Blocks; b += Group.DimX)
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
        for (int s = Sampling.Blocks / 2; s > 0; s >>= 1)
        {
            for (int i = Group.IdxX; i < s; i += Group.DimX) shd[i] += shd[i + s];
            Group.Barrier();
        }
        double r = shd[0];
        Group.Barrier();
        return r;
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
                new Args { V = v, L = Sampling.BlockLength(v), TopK = topK, Temperature = temperature, TopP = topP });
        }
    }
}
