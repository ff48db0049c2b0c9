using ILGPU;
using ILGPU.Runtime;

namespace NegDistill.Kernels;

/// <summary>Token embedding. CPU twin: src/NegDistill.Core/Ops/Embedding.cs. The backward (it only runs when
/// the embedding itself is trained, i.e. full fine-tuning of small bases) is deterministic, without atomics:
///   version 1  BackwardKernel: one thread per channel over all N rows in order. C threads only (4,096 at
///              LLaMA-7b: 16 groups of 256 on 132 SMs, far below an H200's ~130k resident threads), each N
///              read-modify-writes long, and those cannot overlap (two rows may hold the same token).
///   version 2  RankKernel + BackwardRunsKernel: the rows are first put in (token, row) order by a rank count
///              (a warp per row counts the rows before it, N/32 coalesced loads per lane: N·32 = 131k threads at
///              16 × 256), so each token's rows form a run in row order; then one thread per (run, channel)
///              adds its run's dout rows into dwte in that order. Each entry of dwte sees exactly the twin's
///              additions in the twin's order: bit-identical to the twin and to version 1. Work is spread over
///              distinct tokens × C threads; the time is bounded by the longest run (the most frequent
///              token), which degenerates to version 1 only when every row holds the same token.</summary>
public static class EmbeddingKernels
{
    /// <summary>One thread per output element of out(N,C).</summary>
    public static void ForwardKernel(Index1D i, ArrayView<float> outp, ArrayView<int> tokens, ArrayView<float> wte, int c)
    {
        long row = i / c; int j = (int)(i % c);
        outp[i] = wte[(long)tokens[row] * c + j];
    }

    /// <summary>Version 1. One thread per channel j: dwte[tokens[r], j] += dout[r, j] for r = 0 … N−1.</summary>
    public static void BackwardKernel(Index1D j, ArrayView<float> dwte, ArrayView<int> tokens, ArrayView<float> dout, int n, int c)
    {
        for (int r = 0; r < n; r++) dwte[(long)tokens[r] * c + j] += dout[(long)r * c + j];
    }

    /// <summary>Version 2, stage 1. A warp per row r (grid: ⌈N / warps per group⌉ groups): its rank k = the number
    /// of rows (t', r') with t' &lt; t or t' = t, r' &lt; r (t = tokens[r]); writes sorted[k] = r and sorted[N + k] = t.</summary>
    public static void RankKernel(ArrayView<int> sorted, ArrayView<int> tokens, int n)
    {
        int w = Warp.WarpSize, lane = Warp.LaneIdx;
        int row = Grid.IdxX * (Group.DimX / w) + Group.IdxX / w;
        if (row >= n) return;                                  // the whole warp leaves together
        int t = tokens[row], count = 0;
        for (int q = lane; q < n; q += w)
        {
            int tq = tokens[q];
            if (tq < t || (tq == t && q < row)) count++;
        }
        for (int off = w / 2; off > 0; off >>= 1) count += Warp.ShuffleDown(count, off);
        if (lane == 0) { sorted[count] = row; sorted[n + count] = t; }
    }

    /// <summary>Version 2, stage 2. Grid: (C, N). Thread (j, k) works only where sorted position k starts a run of
    /// one token t: dwte[t, j] += dout[r, j] for the run's rows r in row order.</summary>
    public static void BackwardRunsKernel(Index2D i, ArrayView<float> dwte, ArrayView<int> sorted, ArrayView<float> dout, int n, int c)
    {
        int j = i.X, k = i.Y, t = sorted[n + k];
        if (k > 0 && sorted[n + k - 1] == t) return;
        long o = (long)t * c + j;
        float acc = dwte[o];
        for (int m = k; m < n && sorted[n + m] == t; m++) acc += dout[(long)sorted[m] * c + j];
        dwte[o] = acc;
    }

    public enum Version { V1Columns = 1, V2Runs = 2 }

    public sealed class Launcher(Accelerator acc, int group)
    {
        readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int> _fwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int>(ForwardKernel);
        readonly Action<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _bwd =
            acc.LoadAutoGroupedStreamKernel<Index1D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(BackwardKernel);
        readonly Action<KernelConfig, ArrayView<int>, ArrayView<int>, int> _rank =
            acc.LoadStreamKernel<ArrayView<int>, ArrayView<int>, int>(RankKernel);
        readonly Action<Index2D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int> _runs =
            acc.LoadAutoGroupedStreamKernel<Index2D, ArrayView<float>, ArrayView<int>, ArrayView<float>, int, int>(BackwardRunsKernel);
        MemoryBuffer1D<int, Stride1D.Dense>? _sorted;

        public void Forward(ArrayView<float> outp, ArrayView<int> tokens, ArrayView<float> wte, int n, int c) => _fwd(n * c, outp, tokens, wte, c);

        public void Backward(ArrayView<float> dwte, ArrayView<int> tokens, ArrayView<float> dout, int n, int c, Version version = Version.V2Runs)
        {
            if (n <= 0) return;
            if (version == Version.V1Columns) { _bwd(c, dwte, tokens, dout, n, c); return; }
            if (_sorted == null || _sorted.Length < 2L * n)
            {
                acc.Synchronize();                             // a launch in flight may still read the old scratch
                _sorted?.Dispose();
                _sorted = acc.Allocate1D<int>(2L * n);
            }
            int warps = group / acc.WarpSize;
            _rank(new KernelConfig((n + warps - 1) / warps, group), _sorted.View, tokens, n);
            _runs(new Index2D(c, n), dwte, _sorted.View, dout, n, c);
        }
    }
}
