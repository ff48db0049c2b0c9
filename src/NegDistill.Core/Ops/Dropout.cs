using System.Numerics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using NegDistill.Runtime;
namespace NegDistill.Ops;

/// <summary>
/// Inverted dropout with a counter-based mask: element i is kept when Uniform(seed, i) ≥ p and then
/// scaled by 1/(1−p). The backward redraws the same mask from the seed instead of storing it.
/// Used on the LoRA input (method.md: dropout 0.05). The mask of an element depends on its index only,
/// so the backend splits [0, n) into ranges (<c>first</c> = the range's first index) over threads
/// without changing a bit. Float with 256- or 512-bit vectors hashes 8 or 16 counters at once (SplitMix64 in
/// 64-bit lanes, the same integers, so the same mask and the same products as element by element).
/// CPU twin of kernels/.../DropoutKernels.cs.
/// </summary>
public static class Dropout
{
    public static float MaskScale(float p, ulong seed, long i) => CounterRng.Uniform(seed, (ulong)i) >= p ? 1f / (1f - p) : 0f;

    /// <param name="y">(n) elements first … first+n−1</param><param name="x">(n)</param>
    public static void Forward<T>(Span<T> y, ReadOnlySpan<T> x, float p, ulong seed, long n, long first = 0)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (p <= 0f) { x.Slice(0, (int)n).CopyTo(y); return; }
        int i = 0;
        if (typeof(T) == typeof(float))
            i = ForwardVec(MemoryMarshal.Cast<T, float>(y), MemoryMarshal.Cast<T, float>(x), p, seed, (int)n, first);
        // x · MaskScale, with the scale's two values taken once (the same products as per element)
        T keep = T.CreateTruncating(1f / (1f - p)), drop = T.CreateTruncating(0f);
        for (; i < n; i++) y[i] = x[i] * (CounterRng.Uniform(seed, (ulong)(first + i)) >= p ? keep : drop);
    }

    /// <param name="dx">(n) +=</param><param name="dy">(n)</param>
    public static void Backward<T>(Span<T> dx, ReadOnlySpan<T> dy, float p, ulong seed, long n, long first = 0)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (p <= 0f) { for (int j = 0; j < n; j++) dx[j] += dy[j]; return; }
        int i = 0;
        if (typeof(T) == typeof(float))
            i = BackwardVec(MemoryMarshal.Cast<T, float>(dx), MemoryMarshal.Cast<T, float>(dy), p, seed, (int)n, first);
        T keep = T.CreateTruncating(1f / (1f - p)), drop = T.CreateTruncating(0f);
        for (; i < n; i++) dx[i] += dy[i] * (CounterRng.Uniform(seed, (ulong)(first + i)) >= p ? keep : drop);
    }

    /// <summary>y = x · scale for the whole vectors of [0, n); returns how many elements it did.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe int ForwardVec(Span<float> y, ReadOnlySpan<float> x, float p, ulong seed, int n, long first)
    {
        int i = 0;
        fixed (float* py = y) fixed (float* px = x)
        {
            if (Vector512.IsHardwareAccelerated)
                for (; i + 16 <= n; i += 16) (Vector512.Load(px + i) * Scale512(p, seed, first + i)).Store(py + i);
            else if (Vector256.IsHardwareAccelerated)
                for (; i + 8 <= n; i += 8) (Vector256.Load(px + i) * Scale256(p, seed, first + i)).Store(py + i);
        }
        return i;
    }

    /// <summary>dx += dy · scale for the whole vectors of [0, n); returns how many elements it did.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    static unsafe int BackwardVec(Span<float> dx, ReadOnlySpan<float> dy, float p, ulong seed, int n, long first)
    {
        int i = 0;
        fixed (float* pdx = dx) fixed (float* pdy = dy)
        {
            if (Vector512.IsHardwareAccelerated)
                for (; i + 16 <= n; i += 16) (Vector512.Load(pdx + i) + Vector512.Load(pdy + i) * Scale512(p, seed, first + i)).Store(pdx + i);
            else if (Vector256.IsHardwareAccelerated)
                for (; i + 8 <= n; i += 8) (Vector256.Load(pdx + i) + Vector256.Load(pdy + i) * Scale256(p, seed, first + i)).Store(pdx + i);
        }
        return i;
    }

    /// <summary>MaskScale for the 16 counters c, c+1, …, c+15: <see cref="CounterRng.Hash"/> lane by lane.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<float> Scale512(float p, ulong seed, long c)
    {
        var c0 = Vector512.Create((ulong)c) + Vector512.Create(1UL, 2, 3, 4, 5, 6, 7, 8);    // counter + 1
        var c1 = c0 + Vector512.Create(8UL);
        var u = Vector512.ConvertToSingle(Vector512.Narrow(Mix(seed, c0), Mix(seed, c1)).AsInt32()) * Vector512.Create(1.0f / 16777216.0f);
        return Vector512.ConditionalSelect(Vector512.GreaterThanOrEqual(u, Vector512.Create(p)), Vector512.Create(1f / (1f - p)), Vector512<float>.Zero);
    }

    /// <summary>MaskScale for the 8 counters c, …, c+7.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<float> Scale256(float p, ulong seed, long c)
    {
        var c0 = Vector256.Create((ulong)c) + Vector256.Create(1UL, 2, 3, 4);
        var c1 = c0 + Vector256.Create(4UL);
        var u = Vector256.ConvertToSingle(Vector256.Narrow(Mix(seed, c0), Mix(seed, c1)).AsInt32()) * Vector256.Create(1.0f / 16777216.0f);
        return Vector256.ConditionalSelect(Vector256.GreaterThanOrEqual(u, Vector256.Create(p)), Vector256.Create(1f / (1f - p)), Vector256<float>.Zero);
    }

    /// <summary>The top 24 bits of SplitMix64's finaliser of seed + c·φ (c = counter + 1), as <see cref="CounterRng.Hash"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector512<ulong> Mix(ulong seed, Vector512<ulong> c)
    {
        var z = Vector512.Create(seed) + c * Vector512.Create(0x9E3779B97F4A7C15UL);
        z = (z ^ (z >> 30)) * Vector512.Create(0xBF58476D1CE4E5B9UL);
        z = (z ^ (z >> 27)) * Vector512.Create(0x94D049BB133111EBUL);
        return (z ^ (z >> 31)) >> 40;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static Vector256<ulong> Mix(ulong seed, Vector256<ulong> c)
    {
        var z = Vector256.Create(seed) + c * Vector256.Create(0x9E3779B97F4A7C15UL);
        z = (z ^ (z >> 30)) * Vector256.Create(0xBF58476D1CE4E5B9UL);
        z = (z ^ (z >> 27)) * Vector256.Create(0x94D049BB133111EBUL);
        return (z ^ (z >> 31)) >> 40;
    }
}
