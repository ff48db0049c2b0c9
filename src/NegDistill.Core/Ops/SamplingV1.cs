using System.Numerics;
using NegDistill.Runtime;
namespace NegDistill.Ops;

/// <summary>
/// Version 1 of <see cref="Sampling"/>'s fixed summation order, kept as the CPU twin of
/// SamplingKernels.SampleKernel (version 1) so that kernel stays bit-checkable in gpu-check: the row is
/// cut into 256 contiguous blocks of L = ⌈V/256⌉ entries, each block summed in index order in double,
/// the block sums combined by a pairwise tree (Σexp, masses) or in block order (the scan, whose token
/// is the first index in index order whose cumulative kept mass exceeds u · keptMass). The thresholds,
/// the uniform and the log-probability are as in <see cref="Sampling"/>.
/// </summary>
public static class SamplingV1
{
    public const int Blocks = 256;

    public static int BlockLength(int v) => (v + Blocks - 1) / Blocks;

    /// <summary>Samples rows [r0, r1) as <see cref="Sampling.Rows{T}"/> does, in version 1's order.</summary>
    public static void Rows<T>(ReadOnlySpan<T> logits, Span<int> tokens, Span<T> logProbs, ReadOnlySpan<int> rowSeed, ReadOnlySpan<int> rowCounter,
        int r0, int r1, int v, float temperature, int topK, float topP)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        Sampling.Rows<T, BlockOrder>(logits, tokens, logProbs, rowSeed, rowCounter, r0, r1, v, temperature, topK, topP);

    /// <summary>Version 1's order: 256 contiguous blocks, combined by <see cref="Tree"/> (Σexp, masses) or in
    /// block order (the scan).</summary>
    public readonly struct BlockOrder : ISumOrder
    {
        public static double SumExp<T>(ReadOnlySpan<T> z, T max) where T : unmanaged, IFloatingPointIeee754<T>
        {
            int v = z.Length, L = BlockLength(v);
            Span<double> block = stackalloc double[Blocks];
            for (int b = 0; b < Blocks; b++)
            {
                double acc = 0;
                for (int j = b * L, e = Math.Min(v, j + L); j < e; j++) acc += double.CreateTruncating(T.Exp(z[j] - max));
                block[b] = acc;
            }
            return Tree(block);
        }
        public static double Mass<T>(ReadOnlySpan<T> w, T tau) where T : unmanaged, IFloatingPointIeee754<T> => SamplingV1.Mass(w, tau);
        public static int Scan<T>(ReadOnlySpan<T> w, T tau, float u) where T : unmanaged, IFloatingPointIeee754<T> => SamplingV1.Scan(w, tau, u);
    }

    /// <summary>Σ w_j over w_j ≥ τ in the fixed blocked order (block sums in index order, then the tree).</summary>
    public static double Mass<T>(ReadOnlySpan<T> w, T tau) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int v = w.Length, L = BlockLength(v);
        Span<double> block = stackalloc double[Blocks];
        for (int b = 0; b < Blocks; b++)
        {
            double acc = 0;
            for (int j = b * L, e = Math.Min(v, j + L); j < e; j++) if (w[j] >= tau) acc += double.CreateTruncating(w[j]);
            block[b] = acc;
        }
        return Tree(block);
    }

    /// <summary>The token whose cumulative kept mass first exceeds u · keptMass, in index order. Block
    /// sums in index order, their prefix in block order, then the chosen block's running sum, so the
    /// last kept token of the chosen block reaches exactly the prefix that chose it.</summary>
    public static int Scan<T>(ReadOnlySpan<T> w, T tau, float u) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int v = w.Length, L = BlockLength(v);
        Span<double> block = stackalloc double[Blocks];
        double total = 0;
        for (int b = 0; b < Blocks; b++)
        {
            double acc = 0;
            for (int j = b * L, e = Math.Min(v, j + L); j < e; j++) if (w[j] >= tau) acc += double.CreateTruncating(w[j]);
            block[b] = acc;
            total += acc;
        }
        double x = u * total, prefix = 0;
        for (int b = 0; b < Blocks; b++)
        {
            if (prefix + block[b] > x)
            {
                double acc = 0;
                for (int j = b * L, e = Math.Min(v, j + L); j < e; j++)
                {
                    if (!(w[j] >= tau)) continue;
                    acc += double.CreateTruncating(w[j]);
                    if (prefix + acc > x) return j;
                }
            }
            prefix += block[b];
        }
        // unreachable for u < 1 and a finite kept mass > 0 (the arg-max, weight 1, is always kept):
        // only NaN logits get here, and the caller sees −1
        return -1;
    }

    /// <summary>Pairwise tree over the 256 block sums: level s adds entry i + s into i for i &lt; s.</summary>
    internal static double Tree(Span<double> block)
    {
        for (int s = Blocks / 2; s > 0; s >>= 1)
            for (int i = 0; i < s; i++) block[i] += block[i + s];
        return block[0];
    }
}
