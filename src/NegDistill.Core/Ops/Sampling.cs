using System.Numerics;
using NegDistill.Runtime;
namespace NegDistill.Ops;

/// <summary>
/// Next-token sampling over rows of logits z (R,V), one token per row, random numbers only from the
/// row's (seed, counter) through <see cref="CounterRng"/>, so a row's token never depends on which
/// other rows share the call, on the thread count or on the device's group size.
///
///   temperature ≤ 0   greedy: the arg-max, the lowest index among equal maxima.
///   otherwise         weights e_j = exp((z_j − max z)/temperature) ∈ [0, 1], the arg-max at 1.
///     top-k  (0 &lt; k &lt; V)   τ_k = the largest τ with count(e ≥ τ) ≥ k, i.e. the k-th largest weight.
///     top-p  (0 &lt; p &lt; 1)   τ   = the largest τ ≥ τ_k with mass(e ≥ τ) ≥ p · mass(e ≥ τ_k): the
///                          smallest set of highest-probability tokens (among the top-k survivors,
///                          renormalised, as Hugging Face applies them) whose probability reaches p.
///     Both thresholds are defined by bisection on the bit pattern of τ (for non-negative IEEE floats
///     the bit pattern orders like the value), so each is an exact weight value after ~30 passes of
///     count or mass here; the kernel reaches the same τ by a radix select (see SamplingKernels, version
///     2). Every token with e ≥ τ is kept: TIES AT THE THRESHOLD ARE KEPT, so top-k may keep more than k
///     tokens and top-p more than the minimal prefix when weights are exactly equal there.
///     Then u = CounterRng.Uniform(seed, counter) ∈ [0,1), x = u · keptMass, and the token is the first
///     kept token in lane order (below) whose cumulative kept mass exceeds x — a deterministic scan.
///   logProbs[r] = log softmax(z)[token] at temperature 1: the model's own probability of the token,
///     whatever the sampling settings (the WS vote of method.md Step 3 weights candidates by it).
///
/// Fixed summation order (version 2; version 1, 256 contiguous blocks: <see cref="SamplingV1"/>). Every
/// sum over the vocabulary that a decision depends on (Σexp for the log-probability, the masses of
/// top-p, the scan) is computed the same way here and in the kernel, independent of its group size:
/// entry j belongs to lane j mod <see cref="Lanes"/> (1024), each lane is summed in index order in
/// double, the lanes are summed in order within each of 32 chunks of 32 lanes, and the 32 chunk sums
/// in chunk order (<see cref="Fold"/>). Lanes are interleaved so that the kernel's consecutive threads
/// read consecutive entries. The scan walks the same structure: the first chunk whose running sum
/// exceeds x, in it the first lane, in that lane the first kept entry (in index order); if rounding
/// leaves the last step short, the lane's last kept positive entry. With the same fp32 weights the twin
/// and the kernel pick the same token bit for bit; counts are exact integers. Masses are double so the
/// float weights' sums lose nothing that matters for p.
/// CPU twin of kernels/NegDistill.Kernels/SamplingKernels.cs (T = float follows the kernel exactly;
/// T = double computes the weights in double and bisects on double bit patterns).
/// </summary>
/// <summary>A fixed summation order over one row: all that distinguishes the sampling versions (this file's
/// lanes, <see cref="SamplingV1"/>'s blocks). Thresholds, the uniform and the log-probability are shared.</summary>
public interface ISumOrder
{
    /// <summary>Σ exp(z_j − max) over the row.</summary>
    static abstract double SumExp<T>(ReadOnlySpan<T> z, T max) where T : unmanaged, IFloatingPointIeee754<T>;
    /// <summary>Σ w_j over w_j ≥ τ.</summary>
    static abstract double Mass<T>(ReadOnlySpan<T> w, T tau) where T : unmanaged, IFloatingPointIeee754<T>;
    /// <summary>The token drawn at x = u · keptMass; −1 when the kept mass is 0 or NaN.</summary>
    static abstract int Scan<T>(ReadOnlySpan<T> w, T tau, float u) where T : unmanaged, IFloatingPointIeee754<T>;
}

public static class Sampling
{
    public const int Lanes = 1024, Chunks = 32, ChunkLanes = Lanes / Chunks;

    /// <summary>Version 2's order: entry j in lane j mod <see cref="Lanes"/>, lanes folded by <see cref="Fold"/>.</summary>
    public readonly struct LaneOrder : ISumOrder
    {
        public static double SumExp<T>(ReadOnlySpan<T> z, T max) where T : unmanaged, IFloatingPointIeee754<T>
        {
            Span<double> lanes = stackalloc double[Lanes];
            lanes.Clear();
            for (int j = 0; j < z.Length; j++) lanes[j % Lanes] += double.CreateTruncating(T.Exp(z[j] - max));
            return Fold(lanes, stackalloc double[Chunks]);
        }
        public static double Mass<T>(ReadOnlySpan<T> w, T tau) where T : unmanaged, IFloatingPointIeee754<T> => Sampling.Mass(w, tau);
        public static int Scan<T>(ReadOnlySpan<T> w, T tau, float u) where T : unmanaged, IFloatingPointIeee754<T> => Sampling.Scan(w, tau, u);
    }

    /// <summary>Seed of sample (request, index): its stream; the counter is the generation step.</summary>
    public static ulong SampleSeed(ulong seed, long requestId, int index) => CounterRng.Derive(seed, (ulong)requestId, (ulong)index);

    /// <summary>Samples rows [r0, r1).</summary>
    /// <param name="logits">(R,V) read only</param><param name="tokens">(R) out</param><param name="logProbs">(R) out</param>
    /// <param name="rowSeed">(R,2): low and high 32-bit words of each row's seed</param><param name="rowCounter">(R)</param>
    public static void Rows<T>(ReadOnlySpan<T> logits, Span<int> tokens, Span<T> logProbs, ReadOnlySpan<int> rowSeed, ReadOnlySpan<int> rowCounter,
        int r0, int r1, int v, float temperature, int topK, float topP)
        where T : unmanaged, IFloatingPointIeee754<T> =>
        Rows<T, LaneOrder>(logits, tokens, logProbs, rowSeed, rowCounter, r0, r1, v, temperature, topK, topP);

    /// <summary>Samples rows [r0, r1) summing in <typeparamref name="TOrder"/>.</summary>
    public static void Rows<T, TOrder>(ReadOnlySpan<T> logits, Span<int> tokens, Span<T> logProbs, ReadOnlySpan<int> rowSeed, ReadOnlySpan<int> rowCounter,
        int r0, int r1, int v, float temperature, int topK, float topP)
        where T : unmanaged, IFloatingPointIeee754<T> where TOrder : struct, ISumOrder
    {
        var w = new T[v];
        for (int r = r0; r < r1; r++)
        {
            ulong seed = (uint)rowSeed[2 * r] | ((ulong)(uint)rowSeed[2 * r + 1] << 32);
            (tokens[r], logProbs[r]) = Row<T, TOrder>(logits.Slice(r * v, v), w, seed, (uint)rowCounter[r], temperature, topK, topP);
        }
    }

    /// <summary>One row: returns (token, log softmax(z)[token]); (−1, NaN) when the logits are NaN so that
    /// no token can be chosen. <paramref name="w"/> (V) is scratch for the weights.</summary>
    public static (int Token, T LogProb) Row<T, TOrder>(ReadOnlySpan<T> z, Span<T> w, ulong seed, ulong counter, float temperature, int topK, float topP)
        where T : unmanaged, IFloatingPointIeee754<T> where TOrder : struct, ISumOrder
    {
        int v = z.Length;
        T max = T.NegativeInfinity;
        foreach (T x in z) if (x > max) max = x;
        double sumExp = TOrder.SumExp(z, max);
        int token;
        if (temperature <= 0f)
        {
            token = z.IndexOf(max);                            // the first maximum; −1 when every logit is NaN
        }
        else
        {
            T t = T.CreateTruncating(temperature);
            for (int j = 0; j < v; j++) w[j] = T.Exp((z[j] - max) / t);
            var tau = Threshold<T, TOrder>(w, topK, topP);
            token = TOrder.Scan<T>(w, tau, CounterRng.Uniform(seed, counter));
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
        where T : unmanaged, IFloatingPointIeee754<T> => Threshold<T, LaneOrder>(w, topK, topP);

    /// <summary><see cref="Threshold{T}"/> with the masses summed in <typeparamref name="TOrder"/>.</summary>
    public static T Threshold<T, TOrder>(ReadOnlySpan<T> w, int topK, float topP)
        where T : unmanaged, IFloatingPointIeee754<T> where TOrder : struct, ISumOrder
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
            double target = topP * TOrder.Mass(w, FromBits<T>(lo));
            long hi = OneBits<T>() + 1;                        // mass(w > 1) = 0 < target
            while (hi - lo > 1)
            {
                long mid = lo + (hi - lo) / 2;
                if (TOrder.Mass(w, FromBits<T>(mid)) >= target) lo = mid; else hi = mid;
            }
        }
        return FromBits<T>(lo);
    }

    /// <summary>Σ w_j over w_j ≥ τ in the fixed order (lanes, then <see cref="Fold"/>).</summary>
    public static double Mass<T>(ReadOnlySpan<T> w, T tau) where T : unmanaged, IFloatingPointIeee754<T>
    {
        Span<double> lanes = stackalloc double[Lanes];
        KeptLanes(w, tau, lanes);
        return Fold(lanes, stackalloc double[Chunks]);
    }

    /// <summary>lanes[p] = Σ w_j over w_j ≥ τ and j ≡ p (mod <see cref="Lanes"/>), each lane in index order.</summary>
    public static void KeptLanes<T>(ReadOnlySpan<T> w, T tau, Span<double> lanes) where T : unmanaged, IFloatingPointIeee754<T>
    {
        lanes.Clear();
        for (int j = 0; j < w.Length; j++) if (w[j] >= tau) lanes[j % Lanes] += double.CreateTruncating(w[j]);
    }

    /// <summary>The sampled token: x = u · keptMass; the first chunk whose running sum exceeds x, in it
    /// the first lane, in that lane the first kept entry; the lane's last kept positive entry if rounding
    /// leaves the final step short (the chosen lane's sum is > 0, so it has one). −1 when the kept mass
    /// is 0 or NaN (NaN logits).</summary>
    public static int Scan<T>(ReadOnlySpan<T> w, T tau, float u) where T : unmanaged, IFloatingPointIeee754<T>
    {
        int v = w.Length;
        Span<double> lanes = stackalloc double[Lanes], chunk = stackalloc double[Chunks];
        KeptLanes(w, tau, lanes);
        double x = u * Fold(lanes, chunk), prefix = 0;
        for (int c = 0; c < Chunks; c++)
        {
            if (prefix + chunk[c] > x)
            {
                double acc = 0;
                for (int p = c * ChunkLanes; p < (c + 1) * ChunkLanes; p++)
                {
                    double before = acc;
                    acc += lanes[p];
                    if (!(prefix + acc > x)) continue;
                    int last = -1;
                    for (int j = p; j < v; j += Lanes)
                    {
                        if (!(w[j] >= tau) || !(w[j] > T.Zero)) continue;
                        last = j;
                        before += double.CreateTruncating(w[j]);
                        if (prefix + before > x) return j;
                    }
                    return last;
                }
            }
            prefix += chunk[c];
        }
        return -1;
    }

    /// <summary>The fixed combination of the 1024 lane sums: lanes in order within each chunk of 32
    /// (into <paramref name="chunk"/>), then the 32 chunk sums in order.</summary>
    public static double Fold(ReadOnlySpan<double> lanes, Span<double> chunk)
    {
        double total = 0;
        for (int c = 0; c < Chunks; c++)
        {
            double s = 0;
            for (int i = 0; i < ChunkLanes; i++) s += lanes[c * ChunkLanes + i];
            chunk[c] = s;
            total += s;
        }
        return total;
    }

    static long OneBits<T>() where T : unmanaged, IFloatingPointIeee754<T> =>
        typeof(T) == typeof(float) ? BitConverter.SingleToInt32Bits(1f) : BitConverter.DoubleToInt64Bits(1d);

    static T FromBits<T>(long bits) where T : unmanaged, IFloatingPointIeee754<T> =>
        typeof(T) == typeof(float) ? T.CreateTruncating(BitConverter.Int32BitsToSingle((int)bits)) : T.CreateTruncating(BitConverter.Int64BitsToDouble(bits));
}
