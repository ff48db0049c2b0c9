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

    /// <summary>Samples rows [r0, r1).</summary>
    /// <param name="logits">(R,V) read only</param><param name="tokens">(R) out</param><param name="logProbs">(R) out</param>
    /// <param name="rowSeed">(R,2): low and high 32-bit words of each row's seed</param><param name="rowCounter">(R)</param>
    public static void Rows<T>(ReadOnlySpan<T> logits, Span<int> tokens, Span<T> logProbs, ReadOnlySpan<int> rowSeed, ReadOnlySpan<int> rowCounter,
        int r0, int r1, int v, float temperature, int topK, float topP)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        var w = new T[v];
        for (int r = r0; r < r1; r++)
        {
            ulong seed = (uint)rowSeed[2 * r] | ((ulong)(uint)rowSeed[2 * r + 1] << 32);
            (tokens[r], logProbs[r]) = Row(logits.Slice(r * v, v), w, seed, (uint)rowCounter[r], temperature, topK, topP);
        }
    }

    /// <summary>One row: returns (token, log softmax(z)[token]); (−1, NaN) when the logits are NaN so that
    /// no token can be chosen. <paramref name="w"/> (V) is scratch for the weights.</summary>
    public static (int Token, T LogProb) Row<T>(ReadOnlySpan<T> z, Span<T> w, ulong seed, ulong counter, float temperature, int topK, float topP)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int v = z.Length, L = BlockLength(v);
        T max = T.NegativeInfinity;
        foreach (T x in z) if (x > max) max = x;
        Span<double> block = stackalloc double[Blocks];
        for (int b = 0; b < Blocks; b++)
        {
            double acc = 0;
            for (int j = b * L, e = Math.Min(v, j + L); j < e; j++) acc += double.CreateTruncating(T.Exp(z[j] - max));
            block[b] = acc;
        }
        double sumExp = Tree(block);
        int token;
        if (temperature <= 0f)
        {
            token = z.IndexOf(max);                            // the first maximum; −1 when every logit is NaN
        }
        else
        {
            T t = T.CreateTruncating(temperature);
            for (int j = 0; j < v; j++) w[j] = T.Exp((z[j] - max) / t);
            var tau = Threshold<T>(w, topK, topP);
            token = Scan<T>(w, tau, CounterRng.Uniform(seed, counter));
        }
        if (token < 0) return (-1, T.NaN);
        T lp = typeof(T) == typeof(float)
            ? T.CreateTruncating(float.CreateTruncating(z[token] - max) - MathF.Log((float)sumExp))      // as the kernel does it
            : z[token] - max - T.CreateTruncating(Math.Log(sumExp));
        return (token, lp);
    }

    /// <summary>The keep threshold τ over weights w ∈ [0,1] for top-k (k ≤ 0 or ≥ V: off) then top-p
    /// (p ≤ 0 or ≥ 1: off, as in llama2.c); tokens with w ≥ τ are kept. 0 when both are off.</summary>
    public static T Threshold<T>(ReadOnlySpan<T> w, int topK, float topP)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        int v = w.Length;
        long lo = 0;                                           // bits of τ_k; cond(lo) holds: count(w ≥ 0) = V
        if (topK > 0 && topK < v)
        {
            long hi = OneBits<T>() + 1;                        // count(w > 1) = 0 < k
            while (hi - lo > 1)
            {
                long mid = lo + (hi - lo) / 2;
                T tau = FromBits<T>(mid);
                int count = 0;
                foreach (T x in w) if (x >= tau) count++;
                if (count >= topK) lo = mid; else hi = mid;
            }
        }
        if (topP > 0f && topP < 1f)
        {
            double target = topP * Mass(w, FromBits<T>(lo));
            long hi = OneBits<T>() + 1;                        // mass(w > 1) = 0 < target
            while (hi - lo > 1)
            {
                long mid = lo + (hi - lo) / 2;
                if (Mass(w, FromBits<T>(mid)) >= target) lo = mid; else hi = mid;
            }
        }
        return FromBits<T>(lo);
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

    static long OneBits<T>() where T : unmanaged, IFloatingPointIeee754<T> =>
        typeof(T) == typeof(float) ? BitConverter.SingleToInt32Bits(1f) : BitConverter.DoubleToInt64Bits(1d);

    static T FromBits<T>(long bits) where T : unmanaged, IFloatingPointIeee754<T> =>
        typeof(T) == typeof(float) ? T.CreateTruncating(BitConverter.Int32BitsToSingle((int)bits)) : T.CreateTruncating(BitConverter.Int64BitsToDouble(bits));
}
