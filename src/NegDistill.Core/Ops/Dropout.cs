using System.Numerics;
using NegDistill.Runtime;
namespace NegDistill.Ops;

/// <summary>
/// Inverted dropout with a counter-based mask: element i is kept when Uniform(seed, i) ≥ p and then
/// scaled by 1/(1−p). The backward redraws the same mask from the seed instead of storing it.
/// Used on the LoRA input (method.md: dropout 0.05). The mask of an element depends on its index only,
/// so the backend splits [0, n) into ranges (<paramref name="first"/> = the range's first index) over
/// threads without changing a bit. CPU twin of kernels/.../DropoutKernels.cs.
/// </summary>
public static class Dropout
{
    public static float MaskScale(float p, ulong seed, long i) => CounterRng.Uniform(seed, (ulong)i) >= p ? 1f / (1f - p) : 0f;

    /// <param name="y">(n) elements first … first+n−1</param><param name="x">(n)</param>
    public static void Forward<T>(Span<T> y, ReadOnlySpan<T> x, float p, ulong seed, long n, long first = 0)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (p <= 0f) { x.Slice(0, (int)n).CopyTo(y); return; }
        // x · MaskScale, with the scale's two values taken once (the same products as per element)
        T keep = T.CreateTruncating(1f / (1f - p)), drop = T.CreateTruncating(0f);
        for (int i = 0; i < n; i++) y[i] = x[i] * (CounterRng.Uniform(seed, (ulong)(first + i)) >= p ? keep : drop);
    }

    /// <param name="dx">(n) +=</param><param name="dy">(n)</param>
    public static void Backward<T>(Span<T> dx, ReadOnlySpan<T> dy, float p, ulong seed, long n, long first = 0)
        where T : unmanaged, IFloatingPointIeee754<T>
    {
        if (p <= 0f) { for (int i = 0; i < n; i++) dx[i] += dy[i]; return; }
        T keep = T.CreateTruncating(1f / (1f - p)), drop = T.CreateTruncating(0f);
        for (int i = 0; i < n; i++) dx[i] += dy[i] * (CounterRng.Uniform(seed, (ulong)(first + i)) >= p ? keep : drop);
    }
}
